"""The MTCNN detector on the shipped models and real faces."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines import boxes as bx
from engines.boxes import center_shift_matrix, iou_matrix
from engines.images import AreaPyramid, read_image
from engines.loader import load_engine
from engines.mtcnn import MTCNN, MTCNNConfig
from tests.conftest import MODELS


def video_frames(
    path: Path, indices: list[int], size_wh: tuple[int, int] | None = None
) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    while index <= max(indices):
        ok, frame = capture.read()
        if not ok:
            break
        if index in indices:
            frames.append(
                frame
                if size_wh is None
                else cv2.resize(frame, size_wh, interpolation=cv2.INTER_AREA)
            )
        index += 1
    capture.release()
    assert len(frames) == len(indices), f"{path}: could not decode frames {indices}"
    return frames


def assert_same_faces(a, b, min_iou=0.99, max_point_px=0.5):
    assert len(a) == len(b)
    if len(a):
        iou = iou_matrix(a.bbox_xyxy, b.bbox_xyxy)
        best = iou.argmax(axis=1)
        assert iou.max(axis=1).min() >= min_iou
        assert np.abs(a.landmarks - b.landmarks[best]).max() <= max_point_px


def test_finds_each_face_of_a_group_photo(detector, shared_data):
    found = detector.detect([read_image(str(shared_data / "images" / "multiface.jpg"))])[0]
    assert len(found) == 6
    assert found.bbox_xyxy.shape == (6, 4) and found.landmarks.shape == (6, 5, 2)
    assert found.score.min() > 0.9
    # eyes above the mouth, left eye left of the right eye, all inside their box
    eyes_y = found.landmarks[:, :2, 1].mean(axis=1)
    mouth_y = found.landmarks[:, 3:, 1].mean(axis=1)
    assert np.all(eyes_y < mouth_y)
    assert np.all(found.landmarks[:, 0, 0] < found.landmarks[:, 1, 0])
    inside_x = (found.landmarks[..., 0] >= found.bbox_xyxy[:, None, 0]) & (
        found.landmarks[..., 0] <= found.bbox_xyxy[:, None, 2]
    )
    assert inside_x.all()


def test_batch_gives_the_same_faces_as_one_frame_at_a_time(detector, shared_data):
    frames = video_frames(shared_data / "videos" / "hamilton_360p.mp4", [0, 40, 120, 200, 260])
    photo = read_image(
        str(shared_data / "images" / "two_people.jpg")
    )  # another size in the same batch
    batch = [*frames, photo]
    together = detector.detect(batch)
    for frame, result in zip(batch, together, strict=True):
        assert_same_faces(result, detector.detect([frame])[0])
    assert sum(len(r) for r in together) >= 6


@pytest.mark.parametrize(
    ("name", "offset_x"), [("obama_partial_face.jpg", 419), ("obama_partial_face2.jpg", 0)]
)
def test_a_face_cut_by_the_image_edge_keeps_its_size_and_place(
    detector, shared_data, name, offset_x
):
    """Both photos are obama.jpg cut through the face. Zero-padded crops (the default) find
    the face where the whole photo has it; crops clipped at the edge and stretched (the
    facenet-pytorch reference) give a box a third too large or shifted."""
    whole = detector.detect([read_image(str(shared_data / "images" / "obama.jpg"))])[0]
    truth = whole.bbox_xyxy[whole.score.argmax()][None] - np.array(
        [offset_x, 0, offset_x, 0], np.float32
    )
    cut = read_image(str(shared_data / "images" / name))
    padded = detector.detect([cut])[0]
    clipped = MTCNN.load(MODELS / "mtcnn", threads=2, border="clip").detect([cut])[0]
    assert len(padded) == len(clipped) == 1
    assert iou_matrix(truth, padded.bbox_xyxy)[0, 0] >= 0.8
    assert iou_matrix(truth, clipped.bbox_xyxy)[0, 0] < 0.7


def test_frame_too_small_for_the_pyramid_gives_no_faces(detector):
    found = detector.detect([np.full((11, 300, 3), 128, np.uint8), np.zeros((1, 1, 3), np.uint8)])
    assert [len(f) for f in found] == [0, 0]


def test_grayscale_and_rgba_frames_are_accepted(detector, shared_data):
    bgr = read_image(str(shared_data / "images" / "two_people.jpg"))
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    found = detector.detect([gray, bgra, bgr])
    assert [len(f) for f in found] == [2, 2, 2]
    assert [len(f) for f in detector.detect(np.stack([bgr, bgr]))] == [2, 2]  # (N, H, W, 3)
    for one in (bgr, gray):  # one frame, not in a list: its rows are no frames
        with pytest.raises(TypeError, match=r"for one frame, detect\(\[frame\]\)"):
            detector.detect(one)


@pytest.mark.slow
def test_8k_frame(detector, shared_data):
    photo = read_image(str(shared_data / "images" / "obama-1080p.jpg"))
    small = detector.detect([photo])[0]
    factor = 7680 / photo.shape[1]
    big = cv2.resize(photo, (7680, round(photo.shape[0] * factor)), interpolation=cv2.INTER_LINEAR)
    found = detector.detect([big])[0]
    assert len(small) == 1
    # the face is found at the same place; at 8K, min_face_size=20 may add tiny extra finds
    assert iou_matrix(small.bbox_xyxy * factor, found.bbox_xyxy).max() > 0.8


OPENCV_4 = pytest.mark.skipif(
    int(cv2.__version__.split(".")[0]) < 5,
    reason=f"the opencv backend needs OpenCV 5 (this is {cv2.__version__}, which pyproject "
    "allows for the other backends)",
)


@pytest.mark.parametrize("backend", [pytest.param("opencv", marks=OPENCV_4), "openvino"])
def test_backends_agree(shared_data, backend):
    image = read_image(str(shared_data / "images" / "multiface.jpg"))
    ort = MTCNN.load(MODELS / "mtcnn", backend="onnxruntime", threads=2).detect([image])[0]
    other = MTCNN.load(MODELS / "mtcnn", backend=backend, threads=2).detect([image])[0]
    assert len(ort) > 3
    assert_same_faces(ort, other, min_iou=0.98, max_point_px=1.0)


def test_the_opencv_backend_on_opencv_4_says_what_to_install(monkeypatch):
    """OpenCV 4.x's DNN misreads R-Net's Gemm (a shape error at the first face): one
    sentence at load instead. (Simulated: this environment has OpenCV 5.)"""
    from engines.base import EngineError

    monkeypatch.setattr(cv2, "__version__", "4.13.0")
    with pytest.raises(EngineError, match=r"needs OpenCV 5 \(this is 4\.13\.0.*openvino"):
        load_engine(MODELS / "mtcnn" / "rnet.onnx", backend="opencv")


def test_the_openvino_backend_tells_no_third_party_that_it_runs(tmp_path):
    """OpenVINO's import sends a usage event to Google Analytics and leaves a client id in
    ~/intel unless its user opted out: a facewatch process declines it, and writes nothing
    there. (A fresh process with a fresh home, not in a CI job: OpenVINO's telemetry keeps
    quiet in those by itself.)"""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(Path(__file__).parents[2]))
    code = (
        "from engines.loader import load_engine\n"
        f"load_engine({str(MODELS / 'mtcnn' / 'pnet.onnx')!r}, backend='openvino', threads=1)\n"
        "from openvino_telemetry import Telemetry\n"
        "print('consent', Telemetry().consent)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["consent", "False"]
    assert list(tmp_path.iterdir()) == []


# the variables by which ONNX Runtime (and OpenVINO) know a CI job, where they keep quiet
_CI_MARKERS = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS",
               "JENKINS_URL", "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION",
               "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI", "ORT_RUNNING_UNIT_TESTS")  # fmt: skip


def test_the_onnxruntime_backend_tells_no_third_party_that_it_runs(tmp_path):
    """ONNX Runtime 1.29 and later send Microsoft usage events, keyed by a device id kept in
    ~/.cache/Microsoft/DeveloperTools: facewatch's processes turn that off, and write nothing
    there. (Fresh processes with fresh homes, not seen as a CI job: it keeps quiet in those.)"""
    import os
    import subprocess
    import sys

    import onnxruntime

    def home_after(code: str, name: str) -> list[str]:
        home = tmp_path / name
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in _CI_MARKERS}
        env.pop("ORT_DISABLE_TELEMETRY", None)
        env.pop("XDG_CACHE_HOME", None)
        env.update(HOME=str(home), PYTHONPATH=str(Path(__file__).parents[2]))
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        return sorted(str(path.relative_to(home)) for path in home.rglob("*"))

    pnet = str(MODELS / "mtcnn" / "pnet.onnx")
    ours = (
        "import numpy as np\n"
        "from engines.loader import load_engine\n"
        f"engine = load_engine({pnet!r}, backend='onnxruntime', threads=1)\n"
        "engine.infer({'image': np.zeros((1, 3, 24, 24), np.float32)})\n"
    )
    assert home_after(ours, "facewatch") == []
    # and the check can fail: ONNX Runtime started without facewatch keeps its device id there
    if tuple(int(part) for part in onnxruntime.__version__.split(".")[:2]) >= (1, 29):
        plain = f"import onnxruntime\nonnxruntime.InferenceSession({pnet!r})\n"
        assert ".cache/Microsoft/DeveloperTools/.onnxruntime/deviceid" in home_after(plain, "plain")


def test_openvino_engine_names_the_model_in_errors(tmp_path):
    from engines.base import EngineError
    from engines.loader import load_engine

    with pytest.raises(EngineError, match=r"nope\.onnx: model file not found"):
        load_engine(tmp_path / "nope.onnx", backend="openvino")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(EngineError, match=r"broken\.onnx: OpenVINO cannot load the model"):
        load_engine(broken, backend="openvino")
    pnet = load_engine(MODELS / "mtcnn" / "pnet.onnx", backend="openvino", threads=1)
    assert [s.name for s in pnet.inputs] == ["image"]
    assert pnet.inputs[0].shape == (None, 3, None, None)
    with pytest.raises(EngineError, match=r"pnet\.onnx: unknown inputs \['img'\]"):
        pnet.infer({"img": np.zeros((1, 3, 12, 12), np.float32)})
    out = pnet.infer({"image": np.zeros((2, 3, 30, 40), np.float32)})
    assert out["prob"].shape == (2, 2, 10, 15) and out["reg"].shape == (2, 4, 10, 15)
    assert all(len(v) == 0 for v in pnet.infer({"image": np.zeros((0, 3, 12, 12))}).values())


def _mtcnn_copy(folder: Path) -> Path:
    """A copy of the shipped MTCNN models (.onnx and sidecars) in ``folder``."""
    import shutil

    folder.mkdir()
    for file in (MODELS / "mtcnn").glob("*net.*"):
        shutil.copy(file, folder)
    return folder


def test_a_model_cut_short_is_refused_in_one_line_naming_it(tmp_path):
    """OpenVINO's refusal of a model cut short was four lines of its C++ sources ('Exception
    from src/inference/src/cpp/core.cpp:84:' ...) with the reason last: one line now."""
    from engines.base import EngineError

    folder = _mtcnn_copy(tmp_path / "mtcnn")
    onet = folder / "onet.onnx"
    onet.write_bytes(onet.read_bytes()[:20_000])
    with pytest.raises(EngineError) as refused:
        MTCNN.load(folder, backend="openvino", threads=1)
    said = str(refused.value)
    head = f"{onet}: OpenVINO cannot load the model: "
    assert said.startswith(head) and len(said) > len(head) + 10, said  # (the reason: its
    assert "\n" not in said and "src/" not in said, said  # words differ between versions)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    ("copied", "over", "said"),
    [
        ("rnet", "pnet", "not MTCNN's P-Net model: it takes 24x24 images, P-Net any size"),
        ("pnet", "rnet", "not MTCNN's R-Net model: its outputs are maps (P-Net's)"),
        ("onet", "rnet", "not MTCNN's R-Net model: it takes 48x48 images, R-Net 24x24"),
        ("rnet", "onet", "not MTCNN's O-Net model: it takes 24x24 images, O-Net 48x48"),
    ],
)
def test_another_stages_model_copied_over_one_is_refused_at_the_load_naming_it(
    tmp_path, backend, copied, over, said
):
    """rnet.onnx copied over pnet.onnx (the sidecar beside it still says P-Net) loaded, and
    the first detection failed: OpenVINO's many lines, or P-Net's model in R-Net's place an
    IndexError traceback from the cascade (the daemon: exit 1, restarted for ever)."""
    import shutil

    from engines.base import EngineError

    folder = _mtcnn_copy(tmp_path / "mtcnn")
    shutil.copy(MODELS / "mtcnn" / f"{copied}.onnx", folder / f"{over}.onnx")
    with pytest.raises(EngineError) as refused:
        MTCNN.load(folder, backend=backend, threads=1)
    assert str(refused.value).startswith(f"{folder / over}.onnx: {said}"), refused.value


def test_thresholds_and_min_face_size_are_honoured(shared_data):
    image = read_image(str(shared_data / "images" / "multiface.jpg"))
    default = MTCNN.load(MODELS / "mtcnn", threads=2).detect([image])[0]
    strict = MTCNN.load(MODELS / "mtcnn", threads=2, thresholds=(0.6, 0.7, 0.99999)).detect(
        [image]
    )[0]
    big_only = MTCNN.load(MODELS / "mtcnn", threads=2, min_face_size=400).detect([image])[0]
    assert len(strict) < len(default) and np.all(strict.score > 0.99999)
    assert len(big_only) == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"min_face_size": 5}, "min_face_size must be >= 12 and <= 1000 pixels, got 5"),
        ({"scale_factor": 1.2}, "scale_factor must be > 0.1 and < 1, got 1.2"),
        ({"thresholds": (0.6, 0.7)}, "thresholds must be three numbers"),
        ({"thresholds": (0.6, 0.7, 2)}, "thresholds must be three numbers, each > 0 and < 1"),
        # refused by the daemon's config, and now by the detector too
        ({"min_face_size": 1001}, "min_face_size must be >= 12 and <= 1000 pixels"),
        ({"scale_factor": 0.05}, "scale_factor must be > 0.1 and < 1, got 0.05"),
        ({"thresholds": (0.0, 0.7, 0.7)}, "each > 0 and < 1"),
        ({"thresholds": (0.6, 0.7, 1.0)}, "each > 0 and < 1"),
        ({"scale_factor": float("nan")}, "scale_factor must be"),
    ],
)
def test_bad_config_is_refused(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MTCNNConfig(**bad)


def _dlib_boxes(xml: Path) -> dict[str, np.ndarray]:
    boxes = {}
    for image in ET.parse(xml).getroot().iter("image"):
        rows = [
            [
                int(b.get("left")),
                int(b.get("top")),
                int(b.get("left")) + int(b.get("width")),
                int(b.get("top")) + int(b.get("height")),
            ]
            for b in image.iter("box")
            if b.get("ignore") != "1"
        ]
        boxes[image.get("file")] = np.array(rows, np.float32).reshape(-1, 4)
    return boxes


def test_recall_on_dlib_hand_labelled_faces(detector, shared_data):
    folder = shared_data / "detection" / "dlib"
    truth = {**_dlib_boxes(folder / "training.xml"), **_dlib_boxes(folder / "testing.xml")}
    matched = total = false_positives = 0
    for name, boxes in truth.items():
        found = detector.detect([read_image(str(folder / name))])[0]
        iou = iou_matrix(boxes, found.bbox_xyxy) if len(found) else np.zeros((len(boxes), 0))
        used: set[int] = set()
        for row in iou:
            order = [j for j in np.argsort(-row) if row[j] >= 0.3 and j not in used]
            if order:
                used.add(order[0])
                matched += 1
        total += len(boxes)
        false_positives += len(found) - len(used)
    assert total == 43
    assert matched >= 42, f"recall {matched}/{total}"
    assert false_positives == 0


def test_parallel_lanes_give_the_same_faces(detector, shared_data):
    frames = video_frames(shared_data / "videos" / "crowd_1080p.mp4", [0, 30, 60])
    assert len(detector._lanes) == 1  # two lanes (threads=2)
    one_lane = MTCNN.load(MODELS / "mtcnn", threads=1)
    assert one_lane._lanes == []
    # one frame: the largest levels are cut into bands, and the bands, the other levels and
    # the candidates are shared between the lanes
    assert_same_faces(detector.detect(frames[:1])[0], one_lane.detect(frames[:1])[0])
    # three frames: the levels of all of them and all candidates are shared
    for a, b in zip(detector.detect(frames), one_lane.detect(frames), strict=True):
        assert_same_faces(a, b)
    with pytest.raises(ValueError, match="lanes"):
        MTCNN.load(MODELS / "mtcnn", lanes=0)


@pytest.mark.parametrize("level_hw", [(649, 1153), (433, 769), (60, 107)])
def test_pnet_on_bands_of_a_level_gives_the_whole_levels_map(shared_data, level_hw):
    frame = video_frames(shared_data / "videos" / "crowd_1080p.mp4", [0])[0]
    level = AreaPyramid(frame).level(level_hw)
    blob = np.ascontiguousarray(((level[..., ::-1] - 127.5) / 128).transpose(2, 0, 1)[None])
    pnet = load_engine(MODELS / "mtcnn" / "pnet.onnx", backend="openvino", threads=1)
    whole = pnet.infer({"image": blob})
    map_rows = bx.pnet_map_rows(level_hw[0])
    assert whole["prob"].shape[2] == map_rows
    edges = [0, 1, map_rows // 3, map_rows // 3 + 7, map_rows]  # uneven bands, one of 1 row
    parts = []
    for first, end in itertools.pairwise(edges):
        start, stop = bx.pnet_band(level_hw[0], first, end)
        parts.append(pnet.infer({"image": np.ascontiguousarray(blob[:, :, start:stop])}))
    for key in ("prob", "reg"):
        banded = np.concatenate([p[key] for p in parts], axis=2)
        assert banded.shape == whole[key].shape
        assert np.abs(banded - whole[key]).max() <= 1e-6


def test_search_around_prior_faces_finds_them_where_they_went(detector, shared_data):
    """priors=: the faces of a crowd seen 0.2 s earlier are found again around their old
    places (as the full pyramid finds them), nothing else is; no prior, no search."""
    indices = [0, 5, 30, 35, 60, 65, 90, 95]
    frames = video_frames(shared_data / "videos" / "crowd_1080p.mp4", indices, (1280, 720))
    full = detector.detect(frames)
    expected = found = 0
    for k in range(0, len(frames), 2):
        before, after = full[k], full[k + 1]
        (local,) = detector.detect([frames[k + 1]], priors=[before.bbox_xyxy])
        if len(local):  # nothing that the full search does not find
            assert iou_matrix(local.bbox_xyxy, after.bbox_xyxy).max(axis=1).min() >= 0.5
        # the faces that were already there (a face within a face width 0.2 s before)
        near = [f for f in range(len(after)) if len(before) and
                center_shift_matrix(after.bbox_xyxy[f : f + 1], before.bbox_xyxy).min() < 1]  # fmt: skip
        expected += len(near)
        if near and len(local):
            found += int(
                (iou_matrix(after.bbox_xyxy[near], local.bbox_xyxy).max(axis=1) >= 0.7).sum()
            )
    assert expected >= 12
    assert found >= 0.9 * expected, (found, expected)

    assert_same_faces(detector.detect(frames[:2], priors=[None, None])[1], full[1])
    assert [len(r) for r in detector.detect(frames[:2], priors=[np.zeros((0, 4)), None])] == [
        0,
        len(full[1]),
    ]
    with pytest.raises(ValueError, match="priors"):
        detector.detect(frames[:2], priors=[None])


def test_search_around_faces_calls_p_net_with_bounded_batches(shared_data, monkeypatch):
    """The regions around all faces of a batch go to P-Net CROPS_PER_CALL at a time (a
    TensorRT plan's profile ends there): the same faces as one call with all of them."""
    import engines.mtcnn_pnet as pnet_module

    frames = video_frames(shared_data / "videos" / "crowd_1080p.mp4", [0, 5, 30], (1280, 720))
    detector = MTCNN.load(MODELS / "mtcnn", threads=2)
    priors = [f.bbox_xyxy for f in detector.detect(frames)]
    assert sum(len(p) for p in priors) >= 9
    whole = detector.detect(frames, priors=priors)
    batches: list[int] = []
    infer = detector.pnet.infer

    def recording(feeds):
        batches.append(len(feeds["image"]))
        return infer(feeds)

    monkeypatch.setattr(detector.pnet, "infer", recording)
    monkeypatch.setattr(pnet_module, "CROPS_PER_CALL", 4)
    chunked = detector.detect(frames, priors=priors)
    assert batches and max(batches) == 4 and len(batches) > len(bx.ROI_CANVAS)
    for ours, ref in zip(chunked, whole, strict=True):
        assert_same_faces(ours, ref)


def test_r_net_and_o_net_are_called_with_a_few_batch_sizes_and_the_same_faces_found(
    monkeypatch,
) -> None:
    """One lane (engines.threads 1, or a one-core box) called R-Net and O-Net with as many
    candidates as each frame gave: OpenVINO keeps memory for each batch size it meets (3.5
    GB after 1000 of R-Net's). Calls are padded to a few sizes, and find what they found."""
    from engines import mtcnn_base

    detector = MTCNN.load(MODELS / "mtcnn", threads=1)
    seen: dict[str, set[int]] = {"rnet": set(), "onet": set()}
    for net in seen:
        engine = getattr(detector, net)
        real = engine.infer

        def infer(feeds, real=real, sizes=seen[net]):  # type: ignore[no-untyped-def]
            sizes.add(len(feeds["image"]))
            return real(feeds)

        monkeypatch.setattr(engine, "infer", infer)
    clip = MODELS.parent / "configs" / "demo" / "hamilton_360p.mp4"
    frames = video_frames(clip, list(range(0, 270, 6)))
    found = [detector.detect(frames[k : k + 2]) for k in range(0, len(frames), 2)]
    allowed = {2**k for k in range(7)} | set(range(128, 1025, 64))
    assert seen["rnet"] <= allowed and seen["onet"] <= allowed, seen
    assert len(seen["rnet"]) > 2, "the frames gave candidate counts of several sizes"
    monkeypatch.setattr(mtcnn_base, "padded_batch", lambda engine, rows: rows)
    unpadded = [detector.detect(frames[k : k + 2]) for k in range(0, len(frames), 2)]
    for padded_batch, plain_batch in zip(found, unpadded, strict=True):
        for padded, plain in zip(padded_batch, plain_batch, strict=True):
            assert len(padded) == len(plain)
            assert np.allclose(padded.bbox_xyxy, plain.bbox_xyxy, atol=0.01)
            assert np.allclose(padded.landmarks, plain.landmarks, atol=0.01)
