"""The LFW protocol's fold arithmetic on hand-computed pairs, and pairs.txt errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from training.data import DataError
from training.lfw import (
    auc,
    equal_error_rate,
    evaluate_distances,
    pair_distances,
    plot_roc,
)
from training.lfw_pairs import Pair, nrof_folds_for, read_pairs

GRID = np.array([0.5, 1.5, 2.5])
# fold 1: pairs 0-3, fold 2: pairs 4-7
DIST = np.array([0.2, 1.0, 2.0, 3.0, 1.0, 2.0, 0.4, 3.0])
SAME = np.array([True, True, False, False, True, True, False, False])


def _result():
    return evaluate_distances(
        DIST, SAME, nrof_folds=2, far_target=0.5, thresholds=GRID, val_thresholds=GRID
    )


def test_accuracy_uses_the_threshold_chosen_on_the_other_folds() -> None:
    # Test fold 1: on fold 2 the accuracies at 0.5/1.5/2.5 are 1/4, 2/4, 3/4 -> 2.5;
    #   on fold 1, d < 2.5 gets pairs 0, 1, 3 right -> 0.75.
    # Test fold 2: on fold 1 they are 3/4, 4/4, 3/4 -> 1.5; on fold 2 -> pairs 4, 7 -> 0.5.
    result = _result()
    assert result.fold_accuracies == pytest.approx((0.75, 0.5))
    assert result.accuracy_mean == pytest.approx(0.625)
    assert result.accuracy_std == pytest.approx(0.125)
    assert result.best_threshold == pytest.approx(1.5)  # 6/8 on all pairs (first best)


def test_val_at_far_interpolates_the_training_folds_far() -> None:
    # The threshold is the last one at which the other folds' FAR is still at most the target
    # (the original's calculate_val: scipy's slinear interp1d over the raw FAR array).
    # Test fold 1: fold 2's FAR is 0.5 at every threshold -> the last, 2.5 ->
    #   VAL 1 (0.2 and 1.0 < 2.5), FAR 1/2 (2.0 < 2.5, 3.0 not).
    # Test fold 2: fold 1's FAR is 0, 0, 0.5 -> threshold 2.5 -> VAL 1, FAR 1/2.
    result = _result()
    assert result.val_mean == pytest.approx(1.0)
    assert result.val_std == pytest.approx(0.0)
    assert result.far_mean == pytest.approx(0.5)
    assert result.far_threshold == pytest.approx(2.5)


def test_the_far_threshold_sits_just_below_the_first_false_accept() -> None:
    """With 2 different pairs a fold, FAR=1e-3 lies between FAR 0 and the first false accept
    (1/2): the threshold lies between the last grid point below the other fold's smallest
    different-pair distance (1.5004) and the first above it, 1.5 + 1e-3 / 0.5 * 0.001, so
    both same pairs (0.6, 0.9) pass and no different pair does. Interpolating from the first
    threshold of each FAR level put it at 0.003 (1e-3 / 0.5 of the way from 0 to 1.501),
    where no same pair passes: VAL 0 instead of 1."""
    dist = np.tile([0.6, 0.9, 1.5004, 3.5], 2)
    same = np.tile([True, True, False, False], 2)
    result = evaluate_distances(dist, same, nrof_folds=2)
    assert result.far_threshold == pytest.approx(1.500002)
    assert result.val_mean == 1.0 and result.far_mean == 0.0


def test_auc_and_eer_of_a_known_curve() -> None:
    fpr, tpr = np.array([0.0, 0.5, 1.0]), np.array([0.5, 1.0, 1.0])
    assert auc(fpr, tpr) == pytest.approx(0.875)
    assert equal_error_rate(fpr, tpr) == pytest.approx(0.25)


def test_perfect_separation() -> None:
    dist = np.tile([0.1, 0.2, 3.0, 3.5], 5)
    same = np.tile([True, True, False, False], 5)
    result = evaluate_distances(dist, same, nrof_folds=5)
    assert result.accuracy_mean == 1.0 and result.auc == pytest.approx(1.0) and result.eer == 0.0


def test_the_summary_says_how_many_pairs_when_fewer_than_lfws() -> None:
    """Figures from 80 pairs swing from run to run: the line says they came from 80 pairs;
    from LFW's 6,000 it reads as before."""
    import dataclasses

    result = evaluate_distances(np.tile([0.1, 0.2, 3.0, 3.5], 20), np.tile([1, 1, 0, 0], 20), 2)
    assert result.nrof_pairs == 80
    assert result.summary().endswith("best threshold 0.21 (80 pairs)"), result.summary()
    full = dataclasses.replace(result, nrof_pairs=6000)
    assert full.summary().endswith("best threshold 0.21"), full.summary()


def test_folds_out_of_range() -> None:
    with pytest.raises(ValueError, match="nrof_folds"):
        evaluate_distances(DIST, SAME, nrof_folds=1)


def _lfw(tmp_path):
    for name, n in [("Ann_A", 2), ("Bob_B", 1)]:
        (tmp_path / "lfw" / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (tmp_path / "lfw" / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    return tmp_path / "lfw"


def test_pairs_file_is_parsed(tmp_path) -> None:
    lfw = _lfw(tmp_path)
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
    pairs, header = read_pairs(tmp_path / "pairs.txt", lfw)
    assert header == (1, 1)
    assert [(p.path_a.name, p.path_b.name, p.same) for p in pairs] == [
        ("Ann_A_0001.jpg", "Ann_A_0002.jpg", True),
        ("Ann_A_0001.jpg", "Bob_B_0001.jpg", False),
    ]


def test_pairs_naming_missing_images_say_which(tmp_path) -> None:
    lfw = _lfw(tmp_path)
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A\t1\t3\nAnn_A\t1\tCid_C\t1\n")
    with pytest.raises(DataError) as err:
        read_pairs(tmp_path / "pairs.txt", lfw)
    assert "2 image(s)" in str(err.value)
    assert "Ann_A_0003.jpg" in str(err.value) and "Cid_C_0001.jpg" in str(err.value)


def test_malformed_pairs_line_names_the_line(tmp_path) -> None:
    lfw = _lfw(tmp_path)
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A\t1\t2\nAnn_A\tone\n")
    with pytest.raises(DataError, match=r"pairs.txt:3"):
        read_pairs(tmp_path / "pairs.txt", lfw)


def test_roc_png_is_written(tmp_path) -> None:
    import cv2

    path = plot_roc(_result(), tmp_path / "roc.png")
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] >= 300


def test_the_originals_distance_metrics_and_mean_subtraction() -> None:
    a = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    b = np.array([[0.0, 1.0], [-1.0, 0.0], [0.0, 1.0]])
    assert pair_distances(a, b).tolist() == pytest.approx([2.0, 4.0, 1.0])  # squared L2
    assert pair_distances(a, b, 1).tolist() == pytest.approx([0.5, 1.0, 0.0])  # angle / pi
    # the mean of all six embeddings is (1/6, 4/6); taken away, the third pair is no longer
    # collinear: its angle grows
    centred = pair_distances(a, b, 1, subtract_mean=True)
    mean = np.concatenate([a, b]).mean(axis=0)
    u, v = a[2] - mean, b[2] - mean
    expected = np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)) / np.pi
    assert centred[2] == pytest.approx(expected) and centred[2] > 0.05
    with pytest.raises(ValueError, match="distance_metric 2"):
        pair_distances(a, b, 2)


def _pairs(n: int) -> list[Pair]:
    """``n`` pairs, same and different in turn."""
    return [Pair(Path("a.png"), Path("b.png"), i % 2 == 0) for i in range(n)]


@pytest.mark.parametrize(
    ("header", "nrof_pairs", "folds"),
    [((10, 300), 6000, 10), ((), 6000, 10), ((3, 2), 12, 3)],
)
def test_the_folds_come_from_a_two_number_header(header, nrof_pairs, folds) -> None:
    assert nrof_folds_for("pairs.txt", _pairs(nrof_pairs), header, None) == folds


@pytest.mark.parametrize(
    ("header", "nrof_pairs", "message"),
    [
        ((1100,), 2200, "header '1100' is that of a development-view file (as LFW's "
         "pairsDevTrain.txt / pairsDevTest.txt: 1100 same pairs first, then the different "
         "ones), which cannot be split into folds"),
        ((10, 300), 40, "header '10 300' declares 10 folds of 300 same and 300 different pairs "
         "(6000 pairs), but the file holds 40: correct the header, or give --lfw-nrof-folds"),
        ((2, 5), 40, "header '2 5' declares 2 folds of 5 same and 5 different pairs (20 pairs), "
         "but the file holds 40: 4 folds of 5 + 5? (--lfw-nrof-folds 4)"),
        ((1, 10), 20, "header '1 10' declares 1 fold: cross-validation needs at least 2"),
    ],
)  # fmt: skip
def test_a_header_that_does_not_fit_the_file_is_refused(header, nrof_pairs, message) -> None:
    with pytest.raises(DataError) as refused:
        nrof_folds_for("pairs.txt", _pairs(nrof_pairs), header, None)
    assert str(refused.value).startswith(f"pairs.txt: its {message}"), refused.value


def test_folds_asked_for_are_said_once(caplog) -> None:
    pairs = _pairs(20)
    with caplog.at_level(logging.WARNING):
        for _epoch in range(3):  # per-epoch LFW evaluates the same file every epoch
            assert nrof_folds_for("once.txt", pairs, (10, 1), 2) == 2
            assert nrof_folds_for("once.txt", pairs, (10, 300), 2) == 2  # the header is off
    assert [r.getMessage() for r in caplog.records] == [
        "once.txt declares 10 folds; evaluating with 2",
        "once.txt: its header '10 300' declares 10 folds of 300 same and 300 different pairs "
        "(6000 pairs), but the file holds 20: correct the header, or give --lfw-nrof-folds",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"1\t1\nAnn_A\t1\t2\nCaf\xe9\t1\t2\n", r"pairs.txt:3: not UTF-8 text \(byte 0xe9\)"),
        ("²\nAnn_A\t1\t2\n".encode(), r"pairs.txt:1: expected 'name n1 n2' or 'name1 n1 name2 n2', got '²'"),
        (("9" * 5000 + "\nAnn_A\t1\t2\n").encode(), r"pairs.txt:1: header '9999.*': a number of more than 9 digits"),
        (("1 1\nAnn_A\t1\t" + "2" * 5000 + "\n").encode(), r"pairs.txt:2: expected .*, got 'Ann_A 1 2222.*'$"),
    ],
)  # fmt: skip
def test_a_pairs_file_that_is_not_text_or_has_odd_numbers_names_the_line(
    tmp_path, content, message
) -> None:
    """UnicodeDecodeError and ValueError before ('²' passes str.isdigit, int refuses it; a
    5000-digit number passes neither int's limit), printed by the CLIs without the file."""
    lfw = _lfw(tmp_path)
    (tmp_path / "pairs.txt").write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        read_pairs(tmp_path / "pairs.txt", lfw)
    assert str(error.value).startswith(str(tmp_path / "pairs.txt")) and len(str(error.value)) < 300


def test_a_name_too_long_for_a_file_is_a_missing_image(tmp_path) -> None:
    """OSError (File name too long) from the file system before."""
    lfw = _lfw(tmp_path)
    (tmp_path / "pairs.txt").write_text("A" * 300 + "\t1\t2\n")
    with pytest.raises(DataError, match=r"pairs.txt: 2 image\(s\) named in the pairs are missing"):
        read_pairs(tmp_path / "pairs.txt", lfw)
