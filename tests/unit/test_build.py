"""The TensorRT builder's pure logic: options, profiles, cache keys and paths, clear errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from engines import boxes as bx
from engines.base import EngineError, ModelMetadata, file_sha256
from engines.build import (
    BuildError,
    BuildOptions,
    BuildProgress,
    PlanRequest,
    batch_profile,
    default_batch,
    model_profiles,
    pnet_level_sizes,
    pnet_profiles,
)
from engines.plan_cache import (
    GpuInfo,
    Manifest,
    cache_key,
    cache_paths,
    cached_plan,
    damaged,
    debris,
    find_cached_plan,
    read_manifests,
    write_durably,
)
from tests.conftest import MODELS, REPO

H200 = GpuInfo("NVIDIA H200", (9, 0))
CAMERAS = ((1080, 1920), (720, 1280), (360, 640))


# -- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"precision": "fp8"}, "precision must be one of fp32, fp16, int8"),
        ({"batch": (4, 2, 8)}, "MIN <= OPT <= MAX"),
        ({"batch": (0, 1, 8)}, "1 <= MIN"),
        ({"batch": (1, 8)}, "MIN OPT MAX"),
        ({"camera_hw": ((8, 640),)}, "640x8 is too small"),
        ({"min_face_size": 10}, "min_face_size must be >= 12"),
        ({"scale_factor": 1.0}, "scale_factor must be > 0.1 and < 1"),
        ({"scale_factor": 0.05}, "scale_factor must be > 0.1 and < 1"),  # as the config
        ({"workspace_bytes": 1000}, "workspace_bytes must be >= 1048576"),
        ({"precision": "int8"}, "int8 needs calibration images"),
        ({"precision": "fp16", "calib_dir": "/x"}, "calib_dir is only used with int8"),
        ({"precision": "int8", "calib_dir": "/x", "calib_images": 0}, "calib_images must be >= 1"),
    ],
)
def test_bad_options_are_clear_errors(fields, message):
    with pytest.raises(BuildError, match=message):
        BuildOptions(**fields)


def test_build_error_is_an_engine_error():
    assert issubclass(BuildError, EngineError)


def test_cameras_are_canonical():
    a = BuildOptions(camera_hw=((720, 1280), (1080, 1920), (720, 1280)))
    b = BuildOptions(camera_hw=((1080, 1920), (720, 1280)))
    assert a == b and a.camera_hw == ((720, 1280), (1080, 1920))


# -- profiles ----------------------------------------------------------------------------


def test_batch_profile():
    p = batch_profile("image", (3, 24, 24), (1, 16, 256))
    assert (p.min, p.opt, p.max) == ((1, 3, 24, 24), (16, 3, 24, 24), (256, 3, 24, 24))
    assert p.covers((100, 3, 24, 24)) and not p.covers((257, 3, 24, 24))
    assert not p.covers((1, 3, 48, 48))


@pytest.mark.parametrize("name", ["rnet", "onet"])
def test_fixed_size_models_get_one_batch_profile(name):
    meta = ModelMetadata.load(MODELS / "mtcnn" / f"{name}.onnx")
    (p,) = model_profiles(meta, "image", BuildOptions(batch=(1, 32, 512)))
    size = meta.input_size_hw
    assert p.min == (1, 3, *size) and p.opt == (32, 3, *size) and p.max == (512, 3, *size)


def test_default_batch_covers_what_the_engines_ask(test_model):
    """Without --batch a plan takes the largest call the daemon makes of that model."""
    from engines.base import CROPS_PER_CALL
    from engines.facenet import DEFAULT_MAX_BATCH

    for name in ("rnet", "onet"):
        assert default_batch(ModelMetadata.load(MODELS / "mtcnn" / f"{name}.onnx"))[2] == (
            CROPS_PER_CALL
        )
    assert default_batch(ModelMetadata.load(MODELS / "mtcnn" / "pnet.onnx"))[2] >= 8
    assert default_batch(ModelMetadata.load(test_model))[2] == DEFAULT_MAX_BATCH


def detector_sizes(camera_hw, min_face_size, scale_factor):
    """What engines.mtcnn asks P-Net for: one size per pyramid scale of each camera."""
    return {
        bx.scaled_size_hw(hw, s)
        for hw in camera_hw
        for s in bx.pyramid_scales(hw, min_face_size, scale_factor)
    }


@pytest.mark.parametrize(
    ("cameras", "min_face", "factor", "groups"),
    [
        (CAMERAS, 20.0, 0.709, 2),
        (((1080, 1920),), 40.0, 0.709, 2),
        (((2234, 3456), (240, 320)), 20.0, 0.5, 3),
        (((12, 12),), 12.0, 0.709, 2),  # one level only
        (((480, 640), (640, 480)), 20.0, 0.8, 1),  # portrait and landscape
    ],
)
def test_pnet_profiles_cover_every_pyramid_level(cameras, min_face, factor, groups):
    sizes = detector_sizes(cameras, min_face, factor)
    assert set(pnet_level_sizes(cameras, min_face, factor)) == sizes
    profiles = pnet_profiles("image", cameras, (1, 4, 16), min_face, factor, groups)
    assert 2 <= len(profiles) <= groups + 1
    for h, w in sizes:
        for batch in (1, 4, 16):
            assert any(p.covers((batch, 3, h, w)) for p in profiles), (h, w, batch)
    # levels the build was not given: other min_face_size (a camera's override), another
    # aspect ratio, a smaller frame; all at most the largest camera given
    largest = max(cameras, key=lambda hw: hw[0] * hw[1])
    others = [largest, (largest[0] * 3 // 4, largest[1] // 2), (largest[0] // 2, largest[1] // 2)]
    for face in (min_face, min_face * 1.2, min_face * 1.5, min_face * 2.7):
        for h, w in detector_sizes([hw for hw in others if min(hw) >= 12], face, factor):
            assert any(p.covers((1, 3, h, w)) for p in profiles), (face, h, w)
    # the search around known faces: regions at each canvas size, up to MAX a call
    for canvas in bx.ROI_CANVAS:
        for batch in (1, 4, 16):
            assert any(p.covers((batch, 3, canvas, canvas)) for p in profiles), (canvas, batch)
    largest_area = max(h * w for h, w in sizes)
    assert profiles[0].opt[:2] == (4, 3)
    assert profiles[0].opt[2] * profiles[0].opt[3] == largest_area
    assert profiles[0].opt[2:] in sizes
    for p in profiles:
        assert all(lo <= o <= hi for lo, o, hi in zip(p.min, p.opt, p.max, strict=True))


def test_pnet_largest_and_smallest_levels_at_1080p():
    sizes = pnet_level_sizes(((1080, 1920),), 20.0, 0.709)
    assert sizes[0] == (649, 1153)  # 1080 * 0.6 + 1, 1920 * 0.6 + 1
    assert min(h for h, _ in sizes) >= 12
    profiles = pnet_profiles("image", ((1080, 1920),), (1, 16, 16), 20.0, 0.709)
    assert profiles[0].max[2:] == (649, 1153)
    assert profiles[-2].max[2:] == sizes[len(sizes) // 2]  # the small levels' own profile
    assert all(p.min[2:] == (12, 12) for p in profiles[:-1])  # P-Net's window, at the least


def test_the_runner_picks_the_tightest_profile_that_takes_the_shapes():
    from engines.tensorrt import pick_profile

    big = {"image": ((1, 3, 12, 12), (8, 3, 649, 1153), (32, 3, 649, 1153))}
    small = {"image": ((1, 3, 12, 12), (8, 3, 59, 104), (32, 3, 59, 104))}
    regions = {"image": ((1, 3, 26, 26), (64, 3, 36, 36), (1024, 3, 51, 51))}
    ranges = [big, small, regions]
    assert pick_profile(ranges, {"image": (8, 3, 400, 700)}, 1) == 0
    assert pick_profile(ranges, {"image": (8, 3, 40, 70)}, 0) == 1  # both take it: the smaller
    assert pick_profile(ranges, {"image": (200, 3, 36, 36)}, 0) == 2
    assert pick_profile(ranges, {"image": (8, 3, 36, 36)}, 0) == 1  # smaller max than regions'
    assert pick_profile([big, big], {"image": (1, 3, 20, 20)}, 1) == 1  # a tie: stay
    assert pick_profile(ranges, {"image": (64, 3, 400, 700)}, 0) is None


def test_pnet_without_cameras_is_a_clear_error():
    meta = ModelMetadata.load(MODELS / "mtcnn" / "pnet.onnx")
    with pytest.raises(BuildError, match=r"--camera WxH"):
        model_profiles(meta, "image", BuildOptions())


# -- cache key and paths -----------------------------------------------------------------

BASE = {"onnx_sha256": "a" * 64, "trt_version": "10.7.0", "gpu": H200, "options": BuildOptions()}


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "b" * 64},
        {"trt_version": "10.8.0"},
        {"gpu": GpuInfo("NVIDIA H100", (9, 0))},
        {"gpu": GpuInfo("NVIDIA H200", (8, 9))},
        {"options": BuildOptions(precision="fp16")},
        {"options": BuildOptions(batch=(1, 8, 64))},
        {"options": BuildOptions(camera_hw=((720, 1280),))},
        {"options": BuildOptions(min_face_size=40)},
        {"options": BuildOptions(scale_factor=0.8)},
        {"options": BuildOptions(workspace_bytes=2 << 30)},
        {"options": BuildOptions(precision="int8", calib_dir="/data/calib")},
        {"options": BuildOptions(precision="int8", calib_dir="/data/calib", calib_images=64)},
    ],
)
def test_cache_key_changes_with_each_input(change):
    assert cache_key(**{**BASE, **change}) != cache_key(**BASE)


def test_cache_key_is_stable_otherwise():
    key = cache_key(**BASE)
    assert len(key) == 64 and key == cache_key(**BASE)
    same = dataclasses.replace(BuildOptions(), camera_hw=())
    assert cache_key(**{**BASE, "options": same}) == key
    a = BuildOptions(camera_hw=((1080, 1920), (720, 1280)))
    b = BuildOptions(camera_hw=((720, 1280), (1080, 1920), (1080, 1920)))
    assert cache_key(**{**BASE, "options": a}) == cache_key(**{**BASE, "options": b})


def test_cache_paths(tmp_path):
    key = cache_key(**BASE)
    paths = cache_paths(tmp_path, "pnet", key, "10.7.0", H200)
    assert paths.plan == tmp_path / f"pnet-{key[:16]}.plan"
    assert paths.manifest == tmp_path / f"pnet-{key[:16]}.json"
    assert paths.timing_cache == tmp_path / "timing-trt10.7.0-nvidia-h200-sm90.cache"
    assert paths.calibration_cache.suffix == ".calib"


def test_find_cached_plan_reads_manifests(tmp_path):
    onnx = MODELS / "mtcnn" / "rnet.onnx"
    sha = file_sha256(onnx)
    for i, (trt, built) in enumerate([("10.7.0", 1.0), ("10.7.0", 2.0), ("10.8.0", 3.0)]):
        (tmp_path / f"rnet-{i}.plan").write_bytes(b"plan")
        m = Manifest(str(onnx), sha, trt, H200.name, [9, 0], {}, built_at=built)
        (tmp_path / f"rnet-{i}.json").write_text(json.dumps(dataclasses.asdict(m)))
    (tmp_path / "broken.json").write_text("{")
    assert [p.name for p, _ in read_manifests(tmp_path)] == [
        "rnet-2.plan",
        "rnet-1.plan",
        "rnet-0.plan",
    ]
    assert find_cached_plan(onnx, tmp_path, "10.7.0", H200).name == "rnet-1.plan"
    with pytest.raises(BuildError, match="facewatch engines build"):
        find_cached_plan(onnx, tmp_path, "10.9.0", H200)


# -- the plans the daemon asks for (PlanRequest) -----------------------------------------


def _meta(name: str) -> ModelMetadata:
    return ModelMetadata.load(MODELS / "mtcnn" / f"{name}.onnx")


def _cli_options(*argv: str) -> BuildOptions:
    """The options `facewatch engines build ARGV` builds with."""
    from daemon.cli import build_parser
    from daemon.engines_cli import options_from_args

    return options_from_args(build_parser().parse_args(["engines", "build", *argv]))


def test_plan_request_options_are_those_of_the_documented_commands():
    """A plan built by hand with `facewatch engines build` and the same settings is the one
    the daemon asks for: same options, so the same cache key."""
    request = PlanRequest("fp16", ((1080, 1920), (240, 320)), 20.0, 0.709, frames_per_call=8)
    pnet = "models/mtcnn/pnet.onnx --fp16 --camera 1920x1080 --camera 320x240 --batch 1 8 32"
    assert request.options_for(_meta("pnet")) == _cli_options(*pnet.split())
    for name in ("rnet", "onet"):
        cli = _cli_options(f"models/mtcnn/{name}.onnx", "--fp16")
        assert request.options_for(_meta(name)) == cli
        assert cli.camera_hw == () and cli.batch == default_batch(_meta(name))
    # settings that change P-Net's plan leave the others' alone (their plans are shared)
    other = dataclasses.replace(request, camera_hw=((720, 1280),), min_face_size=40)
    assert other.options_for(_meta("rnet")) == request.options_for(_meta("rnet"))
    assert other.options_for(_meta("pnet")) != request.options_for(_meta("pnet"))


def test_plan_request_batch_follows_the_frames_per_call():
    assert PlanRequest(frames_per_call=2).options_for(_meta("pnet")).batch == (1, 2, 32)
    assert PlanRequest(frames_per_call=64).options_for(_meta("pnet")).batch == (1, 64, 64)
    request = PlanRequest("int8", calib_dir="/calib", calib_images=64)
    pnet = request.options_for(_meta("pnet"))
    assert (pnet.precision, pnet.calib_dir, pnet.calib_images) == ("int8", "/calib", 64)
    onet = request.options_for(_meta("onet"))  # sees face crops, not frames: fp16
    assert (onet.precision, onet.calib_dir) == ("fp16", None)
    assert onet == PlanRequest("fp16").options_for(_meta("onet"))


def _fake_plan(cache, onnx, options, built_at):
    key = cache_key(file_sha256(onnx), "10.7.0", H200, options)
    paths = cache_paths(cache, onnx.stem, key, "10.7.0", H200)
    paths.plan.write_bytes(b"plan")
    m = Manifest(str(onnx), file_sha256(onnx), "10.7.0", H200.name, [9, 0], options.key_fields())
    m.built_at = built_at
    paths.manifest.write_text(json.dumps(dataclasses.asdict(m)))
    return paths.plan


def test_cached_plan_is_the_one_built_with_the_options(tmp_path):
    onnx = MODELS / "mtcnn" / "pnet.onnx"
    wanted = BuildOptions("fp16", (1, 8, 32), ((1080, 1920),))
    assert cached_plan(onnx, wanted, tmp_path, "10.7.0", H200) is None
    plan = _fake_plan(tmp_path, onnx, wanted, built_at=1.0)
    newer = _fake_plan(tmp_path, onnx, BuildOptions("fp16", (1, 8, 32), ((360, 640),)), 2.0)
    assert find_cached_plan(onnx, tmp_path, "10.7.0", H200) == newer  # the one-off commands
    assert cached_plan(onnx, wanted, tmp_path, "10.7.0", H200) == plan  # the daemon
    assert cached_plan(onnx, wanted, tmp_path, "10.8.0", H200) is None
    assert cached_plan(MODELS / "mtcnn" / "rnet.onnx", wanted, tmp_path, "10.7.0", H200) is None


@pytest.fixture
def tensorrt_here(monkeypatch):
    """engines.tensorrt's choice of plan, with TensorRT's version, the GPU, the runner and
    the builder replaced by recorders: what is tested is which plan it opens or builds."""
    import types

    from engines import trt_build

    calls: dict[str, list] = {"opened": [], "built": []}
    monkeypatch.setattr(
        trt_build, "import_tensorrt", lambda: types.SimpleNamespace(__version__="10.7.0")
    )
    monkeypatch.setattr(trt_build, "gpu_info", lambda device=0: H200)
    monkeypatch.setattr(trt_build, "TensorRTEngine", lambda path: calls["opened"].append(path))

    def build(onnx, options, cache_dir, force=False):
        calls["built"].append(options)
        return _fake_plan(cache_dir, onnx, options, 3.0)

    monkeypatch.setattr(trt_build, "build_engine", build)
    return calls


def test_the_daemon_opens_its_own_plan_and_builds_a_missing_one(tmp_path, tensorrt_here):
    from engines.trt_build import open_plan_for

    onnx = MODELS / "mtcnn" / "pnet.onnx"
    told: list = []
    request = PlanRequest("fp16", ((1080, 1920),), cache_dir=str(tmp_path), on_build=told.append)
    _fake_plan(tmp_path, onnx, BuildOptions("fp16", (1, 8, 32), ((360, 640),)), 5.0)  # newest
    open_plan_for(onnx, request)  # not built for 1080p: built now, and opened
    wanted = request.options_for(_meta("pnet"))
    assert tensorrt_here["built"] == [wanted] and told == [onnx]
    assert tensorrt_here["opened"] == [cached_plan(onnx, wanted, tmp_path, "10.7.0", H200)]
    open_plan_for(onnx, request)  # found in the cache: not built again
    assert len(tensorrt_here["built"]) == 1 and len(tensorrt_here["opened"]) == 2


def test_a_missing_plan_without_build_names_the_command(tmp_path, tensorrt_here):
    from engines.trt_build import open_plan_for

    request = PlanRequest(
        "fp16",
        ((1080, 1920),),
        cache_dir=str(tmp_path),
        build=False,
        build_command="facewatch engines build --config /etc/facewatch/facewatch.yaml",
    )
    with pytest.raises(BuildError) as error:
        open_plan_for(MODELS / "mtcnn" / "pnet.onnx", request)
    message = str(error.value)
    assert "pnet.onnx: no TensorRT plan built for these settings (fp16, batch 1/8/32, " in message
    assert "cameras 1920x1080, min_face_size 20)" in message
    assert message.endswith("`facewatch engines build --config /etc/facewatch/facewatch.yaml`")
    assert tensorrt_here == {"opened": [], "built": []}


def test_engines_prune_keeps_what_this_machine_opens(tmp_path, monkeypatch, capsys):
    """After a TensorRT upgrade, the old plans go; with --config, also those the daemon's
    config no longer opens (other cameras); --dry-run deletes nothing."""
    import types

    from daemon.cli import main
    from daemon.config import plan_request
    from daemon.config_file import load_config
    from engines import tensorrt

    monkeypatch.setattr(
        tensorrt, "import_tensorrt", lambda: types.SimpleNamespace(__version__="10.7.0")
    )
    monkeypatch.setattr(tensorrt, "gpu_info", lambda device=0: H200)
    cache = tmp_path / "plans"
    cache.mkdir()
    config = tmp_path / "facewatch.yaml"
    config.write_text(
        "cameras: [{name: door, url: rtsp://cam/1}]\n"
        "engines: {backend: tensorrt}\nrecognition: {model: null}\n"
    )
    pnet = MODELS / "mtcnn" / "pnet.onnx"
    wanted = plan_request(load_config(config)).options_for(_meta("pnet"))
    used = _fake_plan(cache, pnet, wanted, 1.0)
    other_cameras = _fake_plan(
        cache, pnet, dataclasses.replace(wanted, camera_hw=((360, 640),)), 2.0
    )
    old_trt = _fake_plan(cache, MODELS / "mtcnn" / "rnet.onnx", BuildOptions("fp16"), 3.0)
    manifest = json.loads(old_trt.with_suffix(".json").read_text())
    old_trt.with_suffix(".json").write_text(json.dumps({**manifest, "tensorrt": "10.6.0"}))

    assert main(["engines", "prune", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.startswith(f"deleted {old_trt}\n1 plan(s)")
    assert not old_trt.exists() and not old_trt.with_suffix(".json").exists()
    args = ["engines", "prune", "--cache-dir", str(cache), "--config", str(config)]
    assert main([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(f"would delete {other_cameras}\n")
    assert other_cameras.exists()
    assert main(args) == 0
    assert not other_cameras.exists() and used.exists() and used.with_suffix(".json").exists()


# -- progress of a build -----------------------------------------------------------------


def _a_build(progress):
    """Calls as TensorRT's builder makes them: nested phases, steps from 0."""
    progress.phase_start("Building engine", None, 3)
    progress.phase_start("Tactic selection", "Building engine", 40)
    for step in range(40):
        assert progress.step_complete("Tactic selection", step) is True  # never cancels
    progress.phase_finish("Tactic selection")
    for step in range(3):
        progress.step_complete("Building engine", step)
    progress.phase_finish("Building engine")


def test_build_progress_bars_on_a_terminal():
    import io

    stream = io.StringIO()
    _a_build(BuildProgress("pnet.onnx", stream))
    shown = stream.getvalue()
    assert "pnet.onnx: Building engine: 100%" in shown and "| 3/3 " in shown
    assert "pnet.onnx: Tactic selection:   0%" in shown and "| 0/40 " in shown  # then cleared


def test_build_progress_in_the_log_otherwise(caplog):
    with caplog.at_level(logging.INFO, logger="engines.build"):
        _a_build(BuildProgress("pnet.onnx"))
    assert [r.getMessage() for r in caplog.records] == [
        "pnet.onnx: Building engine (3 steps)",
        "pnet.onnx: Building engine done",
    ]


# -- calibration preprocessing (pure) ----------------------------------------------------


def test_calibration_preprocessing_follows_the_sidecar():
    from engines.trt_build import preprocess

    meta = ModelMetadata.load(MODELS / "mtcnn" / "onet.onnx")
    bgr = np.zeros((96, 96, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    x = preprocess([bgr], meta, (1, 3, 48, 48))
    assert x.shape == (1, 3, 48, 48) and x.dtype == np.float32
    assert np.allclose(x[0, 2], (255 - 127.5) / 128) and np.allclose(x[0, 0], -127.5 / 128)


def test_calibration_needs_a_full_batch(tmp_path):
    from engines.trt_build import calibration_batches

    meta = ModelMetadata.load(MODELS / "mtcnn" / "rnet.onnx")
    with pytest.raises(BuildError, match="calibration folder not found"):
        calibration_batches(tmp_path / "none", meta, (8, 3, 24, 24), 10)
    with pytest.raises(BuildError, match="0 usable calibration images"):
        calibration_batches(tmp_path, meta, (8, 3, 24, 24), 10)


# -- missing SDKs ------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=300,
    )


BLOCK = "import sys; sys.modules.update({m: None for m in %r}); "


@pytest.mark.parametrize(
    ("blocked", "call", "message"),
    [
        (
            ["tensorrt"],
            "load_engine('models/mtcnn/pnet.onnx', 'tensorrt')",
            "TensorRT Python package",
        ),
        (
            ["tensorrt"],
            "TensorRTEngine('x.plan')",
            "[tensorrt]' --extra-index-url https://pypi.nvidia.com",
        ),
        (["tensorrt"], "build_engine('models/mtcnn/rnet.onnx', BuildOptions())", "TensorRT"),
        (
            ["cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"],
            "import_cudart()",
            "cuda-python",
        ),
        (["torch"], "load_engine('models/mtcnn/pnet.onnx', 'torch')", "needs PyTorch"),
        (["openvino"], "load_engine('models/mtcnn/pnet.onnx', 'openvino')", "openvino package"),
        (
            ["onnxruntime"],
            "load_engine('models/mtcnn/pnet.onnx', 'onnxruntime')",
            "needs the onnxruntime package (a facewatch dependency): pip install onnxruntime",
        ),
    ],
)
def test_missing_sdk_is_one_clear_error(blocked, call, message):
    code = (
        BLOCK % blocked
        + "from engines import load_engine, EngineError\n"
        + "from engines.build import BuildOptions\n"
        + "from engines.trt_build import build_engine\n"
        + "from engines.tensorrt import TensorRTEngine, import_cudart\n"
        + f"try:\n    {call}\nexcept EngineError as e:\n    print('ERR', e)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERR") and message in result.stdout, result.stdout


@pytest.mark.parametrize("package", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        # onnxruntime 1.17 beside NumPy 2: an empty ImportError from its binding, after
        # NumPy printed why ("A module that was compiled using NumPy 1.x cannot be run...")
        ("ImportError()", "ImportError with no message at {package}/_binding.py:1"),
        ('ImportError("libtbb.so.12: cannot open shared object file")', "libtbb.so.12: cannot"),
    ],
)
def test_an_installed_sdk_that_does_not_import_says_why(tmp_path, package, raised, reason):
    """A package that is installed but does not import was called missing ("needs the
    onnxruntime package"), though pip says it is there."""
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("from . import _binding\n")
    (tmp_path / package / "_binding.py").write_text(f"raise {raised}\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "from engines import load_engine, EngineError\n"
        f"try:\n    load_engine('models/mtcnn/pnet.onnx', {package!r})\n"
        "except EngineError as e:\n    print('ERR', e)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    said = result.stdout
    assert said.startswith(f"ERR the {package} backend cannot import {package}"), said
    assert reason.format(package=package) in said and f"pip install -U {package}" in said, said
    assert "needs the" not in said


def _cudart_refusing(driver_version: int):
    """A cuda-python runtime module whose calls fail as cuda-python 13's do on a JetPack 6
    board: cudaErrorInsufficientDriver, the driver saying which CUDA it supports."""
    import enum
    import types

    class CudaError(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInsufficientDriver = 35

    return types.SimpleNamespace(
        cudaError_t=CudaError,
        cudaGetDeviceCount=lambda: (CudaError.cudaErrorInsufficientDriver, 0),
        cudaDriverGetVersion=lambda: (CudaError.cudaSuccess, driver_version),
        cudaGetErrorString=lambda err: (
            CudaError.cudaSuccess,
            b"CUDA driver version is insufficient for CUDA runtime version",
        ),
    )


@pytest.mark.parametrize(
    ("installed", "driver", "message"),
    [
        (
            {"cuda-bindings": "13.4.4", "cuda-python": "13.4.4"},  # pip's pick on JetPack 6
            12060,
            "CUDA error in cudaGetDeviceCount: cuda-bindings 13.4.4 is built for CUDA 13.4, "
            "newer than this machine's driver, which supports CUDA 12.6 "
            "(cudaErrorInsufficientDriver): install the cuda-python of the driver's CUDA, "
            "`pip uninstall -y cuda-bindings cuda-python && pip install "
            "'cuda-python>=12,<12.7'`, or a newer driver",
        ),
        (
            {"cuda-python": "12.6.2.post1"},  # before 12.8 cuda-python held the modules
            12020,
            "cuda-python 12.6.2.post1 is built for CUDA 12.6, newer than this machine's "
            "driver, which supports CUDA 12.2 (cudaErrorInsufficientDriver): install the "
            "cuda-python of the driver's CUDA, `pip uninstall -y cuda-bindings cuda-python "
            "&& pip install 'cuda-python>=12,<12.3'`",
        ),
        (  # (PyPI has no cuda-python 12.0: a pin of the driver's minor would not install)
            {"cuda-bindings": "13.0.1"},
            12000,
            "supports CUDA 12.0 (cudaErrorInsufficientDriver): install the cuda-python of the "
            "driver's CUDA, `pip uninstall -y cuda-bindings cuda-python && pip install "
            "'cuda-python>=12,<13'`",
        ),
        ({}, 12060, "the installed cuda-python is built for a newer CUDA than this"),
        ({"cuda-bindings": "13.4.4"}, 0, "no CUDA driver answers"),
    ],
)
def test_cuda_python_newer_than_the_driver_says_which_to_install(
    installed, driver, message, monkeypatch
):
    """cuda-python 13 on a CUDA 12 driver (a JetPack 6 board): the first CUDA call names
    the installed version, the driver's CUDA and the pip command (it said only 'CUDA driver
    version is insufficient for CUDA runtime version')."""
    from importlib import metadata

    from engines import tensorrt

    def version(dist):
        if dist not in installed:
            raise metadata.PackageNotFoundError(dist)
        return installed[dist]

    monkeypatch.setattr(tensorrt, "import_cudart", lambda: _cudart_refusing(driver))
    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(EngineError) as caught:
        tensorrt.gpu_info()
    assert message in str(caught.value)


def test_the_jetson_install_takes_the_cuda_python_of_jetpacks_cuda():
    """The Jetson install line of docs/operations.md, the Jetson example's header and the
    missing-TensorRT error name cuda-python 12.6, JetPack 6.1 and 6.2's CUDA (a bare
    `cuda-python` took 13, which JetPack 6's CUDA 12 driver cannot run)."""
    from engines.tensorrt import install_hint_trt

    pin = "'cuda-python==12.6.*'"
    docs = (REPO / "docs" / "operations.md").read_text().splitlines()
    jetson = [line for line in docs if line.startswith("sudo") and line.endswith("JetPack 6.1/6.2")]
    assert len(jetson) == 1 and pin in jetson[0], jetson
    assert pin in (REPO / "configs" / "jetson-example.yaml").read_text()
    assert pin in install_hint_trt()


def test_engines_cli_reports_bad_options(capsys):
    from daemon.cli import main

    assert main(["engines", "build", "models/mtcnn/rnet.onnx", "--batch", "8", "1", "4"]) == 2
    assert "MIN <= OPT <= MAX" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["engines", "build", "x.onnx", "--camera", "1920by1080"])
    assert "expected WIDTHxHEIGHT" in capsys.readouterr().err
    # named as the option (it said min_face_size, the engine's name); bounds as the config's
    for option, message in (
        (["--min-face-size", "5"], "argument --min-face-size: must be >= 12 and <= 1000, got 5"),
        (["--scale-factor", "0.05"], "argument --scale-factor: must be > 0.1 and < 1, got 0.05"),
    ):
        with pytest.raises(SystemExit):
            main(["engines", "build", "models/mtcnn/pnet.onnx", "--camera", "640x480", *option])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("size", "hw"),
    [
        ("1920x1080", (1080, 1920)),
        ("1920X1080", (1080, 1920)),  # the config refused it, --camera took it
        ("12x12", (12, 12)),
        ("0x0", None),  # --camera took these, for a BuildError later or a plan of nothing
        ("-5x100", None),
        ("11x100", None),
        ("1920*1080", None),
        ("1920x1080x3", None),
    ],
)
def test_a_camera_size_is_read_alike_by_the_config_and_engines_build(size, hw, capsys):
    """engines.tensorrt.camera_sizes and `engines build --camera` take the same WxH: a size
    one refuses, the other refuses at once, and --camera's error names it."""
    from pydantic import ValidationError

    from daemon.cli import build_parser
    from daemon.config_pipeline import TensorRTConfig

    command = ["engines", "build", "x.onnx", f"--camera={size}"]
    if hw is None:
        with pytest.raises(ValidationError, match="expected WIDTHxHEIGHT of at least 12x12"):
            TensorRTConfig(camera_sizes=[size])
        with pytest.raises(SystemExit):
            build_parser().parse_args(command)
        assert f"argument --camera: expected WIDTHxHEIGHT of at least 12x12, e.g. 1920x1080, got {size!r}" in capsys.readouterr().err  # fmt: skip
    else:
        assert TensorRTConfig(camera_sizes=[size]).camera_hw() == (hw,)
        assert build_parser().parse_args(command).camera == [hw]


def test_engines_build_config_errors(tmp_path, capsys):
    from daemon.cli import main

    config = tmp_path / "facewatch.yaml"
    config.write_text("cameras: [{name: door, url: rtsp://cam/1}]\n")
    assert main(["engines", "build", "--config", str(config)]) == 2
    assert (
        "engines.backend is openvino: the daemon opens no TensorRT plans" in capsys.readouterr().err
    )
    config.write_text("cameras: [{name: door, url: rtsp://cam/1}]\nengines: {backend: tensorrt}\n")
    assert main(["engines", "build", "--config", str(config), "--fp16", "--camera", "64x64"]) == 2
    assert "leave out --fp16 --camera" in capsys.readouterr().err
    assert main(["engines", "build"]) == 2
    assert "give MODEL.onnx, or --config FILE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", [["engines", "build", "-c"], ["run", "-c"], ["validate-config"]]
)
def test_the_tensorrt_backend_without_tensorrt_is_one_clear_error(tmp_path, command):
    """`engines build --config`, the daemon itself and the check of its file: exit status 2
    and what to install."""
    config = tmp_path / "facewatch.yaml"
    config.write_text(
        "cameras: [{name: door, url: rtsp://cam/1}]\n"
        "engines: {backend: tensorrt, tensorrt: {camera_sizes: [1280x720]}}\n"
        "recognition: {model: null}\n"
    )
    if command[0] == "engines":  # the daemon's file, its secrets not at hand: not needed here
        config.write_text(config.read_text() + "mqtt: {password: '${credential:mqtt_password}'}\n")
    argv = [*command, str(config)]
    result = run_python(
        BLOCK % ["tensorrt"] + f"from daemon.cli import main; raise SystemExit(main({argv!r}))"
    )
    assert result.returncode == 2, result.stderr
    assert "the tensorrt backend needs the TensorRT Python package" in result.stderr


def test_engines_list_shows_cached_plans(tmp_path, capsys):
    from daemon.cli import main

    assert main(["engines", "list", "--cache-dir", str(tmp_path)]) == 0
    assert "no plans in" in capsys.readouterr().out
    options = BuildOptions("fp16", (1, 8, 16), ((1080, 1920),)).key_fields()
    m = Manifest("/m/pnet.onnx", "a" * 64, "10.7.0", H200.name, [9, 0], options, built_at=1.0)
    (tmp_path / "pnet-0.plan").write_bytes(b"x" * 2000)
    (tmp_path / "pnet-0.json").write_text(json.dumps(dataclasses.asdict(m)))
    assert main(["engines", "list", "--cache-dir", str(tmp_path)]) == 0
    line = capsys.readouterr().out
    assert "pnet-0.plan  pnet.onnx  fp16  batch 1/8/16  cameras 1920x1080  TensorRT 10.7.0" in line


def test_prune_all_empties_the_cache_without_tensorrt(tmp_path, capsys):
    """After TensorRT is gone (or to free the disk), --all deletes every plan; an empty cache
    needs no TensorRT to say so."""
    import importlib.util

    from daemon.cli import main

    args = ["engines", "prune", "--cache-dir", str(tmp_path)]
    assert main(args) == 0 and "no plans in" in capsys.readouterr().out
    options = BuildOptions("fp16", (1, 8, 16), ((1080, 1920),)).key_fields()
    m = Manifest("/m/pnet.onnx", "a" * 64, "10.7.0", H200.name, [9, 0], options, built_at=1.0)
    plan = tmp_path / "pnet-0.plan"
    plan.write_bytes(b"x" * 2000)
    plan.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(m)))
    if importlib.util.find_spec("tensorrt") is None:
        assert main(args) == 2 and "(--all deletes every plan)" in capsys.readouterr().err
    assert main([*args, "--all", "--dry-run"]) == 0 and plan.exists()
    assert f"would delete {plan}" in capsys.readouterr().out
    assert main([*args, "--all"]) == 0
    assert not plan.exists() and not plan.with_suffix(".json").exists()


def test_prune_all_deletes_plans_whose_manifest_is_damaged_and_list_marks_a_damaged_plan(
    tmp_path, capsys
):
    """A manifest cut short or written over hid its plan (tens to hundreds of MB) from
    `list` and from `prune --all` ('every plan') for good; a plan cut short after its
    manifest was written was listed as any other."""
    import hashlib

    from daemon.cli import main

    options = BuildOptions("fp16", (1, 8, 16), ((1080, 1920),)).key_fields()
    m = Manifest("/m/facenet.onnx", "a" * 64, "10.7.0", H200.name, [9, 0], options, 1.0)
    written = dataclasses.replace(m, plan_sha256=hashlib.sha256(b"x" * 2000).hexdigest())
    good, cut = tmp_path / "facenet-good.plan", tmp_path / "facenet-cut.plan"
    hidden = [tmp_path / "pnet-garbage.plan", tmp_path / "onet-truncated.plan"]
    for plan in (good, cut, *hidden):
        plan.write_bytes(b"x" * (200 if plan == cut else 2000))
        plan.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(written)))
    hidden[0].with_suffix(".json").write_bytes(bytes(range(128, 256)))
    hidden[1].with_suffix(".json").write_text(json.dumps(dataclasses.asdict(written))[:60])
    assert main(["engines", "list", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines}
    assert sorted(listed) == ["facenet-cut.plan", "facenet-good.plan"], lines
    assert listed["facenet-cut.plan"].endswith(
        "DAMAGED: not the file built (sha256 differs from its manifest's)"
    )
    assert "DAMAGED" not in listed["facenet-good.plan"]
    assert main(["engines", "prune", "--cache-dir", str(tmp_path), "--all"]) == 0
    assert "4 plan(s)" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_prune_deletes_what_cut_builds_left_and_nothing_in_progress(tmp_path, capsys):
    """A build cut by a power cut or a kill leaves scratch files, a plan without a manifest
    (invisible to `list`), a manifest without a plan: prune finds them, without TensorRT.
    The scratch file of a build still running, and a plan just written, whose manifest
    comes next, stay."""
    import os
    import time

    from daemon.cli import main

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=300).stdout.strip()  # fmt: skip
    cut = tmp_path / f"pnet-0123.plan.{dead}.tmp"
    running = tmp_path / f"rnet-4567.plan.{os.getpid()}.tmp"
    orphan, fresh = tmp_path / "onet-89ab.plan", tmp_path / "pnet-cdef.plan"
    lonely, timing = tmp_path / "rnet-0000.json", tmp_path / "timing-trt10.6.0-h200-sm90.cache"
    for path in (cut, running, orphan, fresh, lonely, timing):
        path.write_bytes(b"x" * 1000)
    an_hour_ago = time.time() - 3600
    os.utime(orphan, (an_hour_ago, an_hour_ago))
    args = ["engines", "prune", "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 plan(s), 3 other file(s)" in out, out
    assert not any(p.exists() for p in (cut, orphan, lonely))
    assert running.exists() and fresh.exists() and timing.exists()  # (timing: with TensorRT)
    assert main([*args, "--all"]) == 0 and not timing.exists()


def test_cache_files_are_written_whole_and_old_timing_caches_are_debris(tmp_path):
    """What `engines build` writes (plan, manifest, timing cache) goes through a scratch file
    and a rename, flushed: a power cut leaves the old file or the new one, never half. The
    timing cache of this TensorRT and GPU is kept, another version's is not."""
    plan = tmp_path / "pnet-0.plan"
    write_durably(plan, b"new plan")
    assert plan.read_bytes() == b"new plan" and sorted(tmp_path.iterdir()) == [plan]
    ours = cache_paths(tmp_path, "pnet", "0" * 64, "10.7.0", H200).timing_cache
    theirs = cache_paths(tmp_path, "pnet", "0" * 64, "10.6.0", H200).timing_cache
    for cache in (ours, theirs):
        write_durably(cache, b"t")
    assert debris(tmp_path, "10.7.0", H200) == [theirs]


def test_a_plan_is_damaged_only_when_it_is_not_what_was_written(tmp_path):
    """The daemon rebuilds a plan TensorRT cannot open only when it is not the file the
    build wrote (a failing disk): a GPU short of memory must not cost a rebuild."""
    plan = tmp_path / "pnet-0.plan"
    plan.write_bytes(b"the plan")
    m = Manifest("/m/pnet.onnx", "a" * 64, "10.7.0", H200.name, [9, 0], {})
    plan.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(m)))
    assert not damaged(plan)  # an older manifest: cannot be told
    m.plan_sha256 = hashlib.sha256(b"the plan").hexdigest()
    plan.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(m)))
    assert not damaged(plan)
    plan.write_bytes(b"the pl")  # cut short
    assert damaged(plan)
