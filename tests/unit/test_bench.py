"""The benchmark scripts' honesty: what they record about the machine, their exit status when
a worker failed, where they write, their argument checks. Nothing here times anything: the
workers are stand-ins (a small script in place of the interpreter) that write a result."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_bench(name: str) -> ModuleType:
    if str(REPO / "bench") not in sys.path:  # as when the script runs: its folder first
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_mtcnn() -> ModuleType:
    return load_bench("bench_mtcnn")


# A stand-in for `python bench/bench_mtcnn.py --worker ...`: burns a little CPU and writes a
# result of no faces; fails when FAIL names its --worker.
FAKE_MTCNN_WORKER = """\
#!{python}
import json, os, sys
args = sys.argv[2:]
opt = dict(zip(args[::2], args[1::2]))
if opt["--worker"] == os.environ.get("FAIL"):
    sys.exit("ModuleNotFoundError: No module named 'torchvision'")
sum(i * i for i in range(300_000))
frames = int(opt["--frames"]) - int(opt["--warmup"])
result = {{"impl": opt["--worker"], "fps": 10.0, "resolution_wh": [640, 360],
          "cpu_ms_per_frame": 50.0, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
          "detections": [{{"bbox_xyxy": [], "score": [], "landmarks": []}}] * frames}}
open(opt["--result"], "w").write(json.dumps(result))
"""


@pytest.fixture
def fake_python(tmp_path) -> Path:
    path = tmp_path / "fake_python"
    path.write_text(FAKE_MTCNN_WORKER.format(python=sys.executable))
    path.chmod(0o755)
    return path


def mtcnn_args(fake_python: Path, tmp_path: Path, *more: str) -> list[str]:
    return [
        "--clips", "hamilton_360p", "--frames", "3", "--warmup", "1", "--batch", "2",
        "--python-ref", str(fake_python), "--python-ours", str(fake_python),
        "--json", str(tmp_path / "out.json"), *more,
    ]  # fmt: skip


def test_bench_mtcnn_records_each_workers_load_and_cpu_seconds(
    bench_mtcnn, fake_python, tmp_path, capsys
):
    assert bench_mtcnn.main(mtcnn_args(fake_python, tmp_path)) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    machines = out["machine"]
    assert [m["worker"] for m in machines] == [
        "hamilton_360p reference b1",
        "hamilton_360p facewatch b1",
        "hamilton_360p reference b2",
        "hamilton_360p facewatch b2",
    ]
    for m in machines:
        assert m["load_1min_before"] >= 0
        assert m["worker_cpu_s"] > 0  # the stand-in's own CPU, not the driver's
        assert m["others_cores"] is None or m["others_cores"] >= 0
    assert out["rows"][0]["reference"]["cpu_ms_per_frame"] == 50.0
    printed = capsys.readouterr().out
    assert "1-minute load average" in printed
    assert "| 50 / 50 (50 / 50) |" in printed  # CPU ms a frame, in the table


def test_bench_mtcnn_warns_when_the_machine_was_busy(
    bench_mtcnn, fake_python, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(bench_mtcnn.os, "getloadavg", lambda: (4.9, 4.0, 3.0))
    assert bench_mtcnn.main(mtcnn_args(fake_python, tmp_path)) == 0
    assert "WARNING: the machine was not idle" in capsys.readouterr().out


def test_a_busy_machine_is_judged_by_others_not_by_the_benchs_own_workers(bench_mtcnn):
    def machine(load: float, others: float | None) -> dict:
        return {"load_1min_before": load, "others_cores": others}

    # the load before later workers includes the earlier workers': no warning for that
    quiet = bench_mtcnn.machine_summary([machine(0.1, 0.05), machine(1.8, 0.1)])
    assert not any(line.startswith("WARNING") for line in quiet)
    # others using a core beside a worker, or a loaded machine before the first one
    for busy in ([machine(0.1, 0.05), machine(1.8, 0.9)], [machine(0.8, 0.0)]):
        assert bench_mtcnn.machine_summary(busy)[-1].startswith("WARNING")


def test_bench_mtcnn_ref_wait_policy_passive_reaches_the_reference_only(
    bench_mtcnn, fake_python, tmp_path, monkeypatch
):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    args = mtcnn_args(fake_python, tmp_path, "--ref-wait-policy", "passive")
    assert bench_mtcnn.main(args) == 0
    row = json.loads((tmp_path / "out.json").read_text())["rows"][0]
    assert row["reference"]["omp_wait_policy"] == "PASSIVE"
    assert row["ours_b1"]["omp_wait_policy"] is None
    assert bench_mtcnn.main(mtcnn_args(fake_python, tmp_path)) == 0  # default: as users run it
    row = json.loads((tmp_path / "out.json").read_text())["rows"][0]
    assert row["reference"]["omp_wait_policy"] is None


@pytest.fixture(scope="module")
def bench_facenet() -> ModuleType:
    return load_bench("bench_facenet")


def facenet_result(kind: str, rate: float) -> dict:
    machine = {"load_1min_before": 0.1, "worker_cpu_s": 2.0, "worker_wall_s": 1.0}
    if kind == "match":
        stats = {"median_s": 1e-3, "calls": 10}
        return {
            "embedding_size": 128,
            "enroll_s": 0.1,
            "first_match_s": 0.1,
            **stats,
            "machine": machine,
        }
    batches = {
        f"batch{b}": {"median_s": b / rate, "calls": 5, "faces_per_s": rate} for b in (1, 16)
    }
    return {"input": "160 px, fp32", **batches, "machine": {**machine, "others_cores": 0.0}}


def test_bench_facenet_rounds_alternate_the_sides_and_the_median_counts(
    bench_facenet, tmp_path, monkeypatch, capsys
):
    ran: list[str] = []
    rates = iter([10.0, 100.0, 1.0, 30.0, 300.0, 3.0, 20.0, 200.0, 2.0, 0.0])

    def run_worker(kind, args):
        ran.append(kind)
        return facenet_result(kind, next(rates))

    monkeypatch.setattr(bench_facenet, "run_worker", run_worker)
    out = tmp_path / "facenet.json"
    args = ["--rounds", "3", "--model", str(tmp_path / "m.onnx"), "--json", str(out)]
    assert bench_facenet.main(args) == 0
    assert ran == ["ort", "bf16", "torch"] * 3 + ["match"]
    results = json.loads(out.read_text())
    assert results["rounds"] == 3
    assert results["ort"]["batch1"]["faces_per_s"] == 20.0
    assert results["ort"]["batch1"]["faces_per_s_rounds"] == [10.0, 30.0, 20.0]
    assert results["torch"]["batch16"]["faces_per_s"] == 2.0
    assert len(results["machine"]) == 10
    printed = capsys.readouterr().out
    assert "20.0 (10.0-30.0) f/s" in printed
    assert "10.00x" in printed  # the medians' ratio, 20 / 2


def test_bench_facenet_records_a_workers_load_and_cpu_seconds(bench_facenet, tmp_path):
    args = bench_facenet.argparse.Namespace(
        model=tmp_path / "unused.onnx", threads=1, seconds=0.01, gallery_size=50, match_dim=8
    )
    result = bench_facenet.run_worker("match", args)  # a real worker: a small gallery
    assert result["embedding_size"] == 8
    assert result["machine"]["load_1min_before"] >= 0
    assert result["machine"]["worker_cpu_s"] > 0


def test_bench_facenet_model_random_measures_the_references_network(
    bench_facenet, tmp_path, monkeypatch, capsys
):
    models: list[str] = []

    def run_worker(kind, args):
        models.append(str(args.model))
        return facenet_result(kind, 10.0)

    built = tmp_path / "random" / "facenet.onnx"
    monkeypatch.setattr(bench_facenet, "run_worker", run_worker)
    monkeypatch.setattr(bench_facenet, "random_model", lambda folder: built)
    assert bench_facenet.main(["--model", "random"]) == 0
    assert set(models) == {str(built)}
    assert "model a random Inception-ResNet-v1" in capsys.readouterr().out
    if not bench_facenet.DEFAULT_MODEL.is_file():
        pytest.skip(f"{bench_facenet.DEFAULT_MODEL} is missing: the shipped model's side untested")
    models.clear()
    assert bench_facenet.main([]) == 0  # the shipped model
    assert set(models) == {str(bench_facenet.DEFAULT_MODEL)}


def test_bench_facenet_does_not_call_another_networks_ratio_a_speed_up(bench_facenet):
    args = bench_facenet.argparse.Namespace(
        threads=2, random_model=False, model="m.onnx", gallery_size=10
    )
    results = {kind: facenet_result(kind, 100.0) for kind in ("ort", "bf16", "match")}
    results["torch"] = facenet_result("torch", 10.0)
    results["ort"]["same_network"] = False  # the shipped dlib ResNet at 150 px
    results["bf16"]["same_network"] = True
    text = bench_facenet.table(results, args)
    assert "ratio (another network, not a speed-up), ONNX Runtime" in text
    assert "speed-up, OpenVINO bf16" in text


def bench_help(script: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / f"{script}.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize(
    "script, option",
    [
        ("bench_daemon", "--seconds SECONDS     measured seconds per run (default: 60)"),
        ("bench_motion", "--warmup WARMUP    seconds before each run's measurement (default: 10)"),
        ("bench_spool", "--messages MESSAGES  events per case (default: 1000)"),
        ("soak", "--minutes MINUTES     soak length (default: 30)"),
        ("bench_arrivals", "--visits VISITS       visits measured (23.9 s each) (default: 6)"),
        ("bench_decode", "--repeat REPEAT       decodes of each clip measured (default: 5)"),
    ],
)
def test_bench_help_says_what_the_script_does_in_whole_sentences_and_shows_defaults(script, option):
    text = bench_help(script)
    description = text.split("\n\n")[1]
    assert description.rstrip().endswith("."), description
    assert option in text


@pytest.mark.parametrize(
    "script",
    ["bench_daemon", "bench_motion", "soak", "bench_fairness", "bench_arrivals", "bench_decode"],
)
def test_a_rerun_does_not_overwrite_the_committed_results(script):
    default = load_bench(script).DEFAULT_OUT
    assert default.parent == REPO / "bench" / ".cache"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(default)], cwd=REPO, check=False)
    assert ignored.returncode == 0, f"{default} is not git-ignored"
    assert "bench/results/ holds the committed ones" in " ".join(bench_help(script).split())


def test_bench_mtcnn_exits_1_and_says_failed_when_a_worker_failed(
    bench_mtcnn, fake_python, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FAIL", "reference")  # the stand-in fails as without torchvision
    assert bench_mtcnn.main(mtcnn_args(fake_python, tmp_path)) == 1
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["failed"] is True
    assert "torchvision" in out["rows"][0]["reference"]["error"]
    printed = capsys.readouterr().out
    assert "FAILED: 2 of 4 workers" in printed
    assert "n/ax" not in printed  # an unknown speed-up is n/a
    monkeypatch.delenv("FAIL")
    assert bench_mtcnn.main(mtcnn_args(fake_python, tmp_path)) == 0
    assert json.loads((tmp_path / "out.json").read_text())["failed"] is False


@pytest.mark.parametrize(
    "broken, status",
    [
        ({"ort": {"error": "model file not found"}}, 1),
        ({"match": {"error": "model file not found"}}, 1),
        ({"bf16": {"skipped": "this CPU has no native bf16"}}, 0),  # not a failure
    ],
)
def test_bench_facenet_exits_1_and_says_failed_when_a_worker_failed(
    bench_facenet, tmp_path, monkeypatch, capsys, broken, status
):
    def run_worker(kind, args):
        result = facenet_result(kind, 10.0)
        if kind in broken:
            return {**broken[kind], "machine": result["machine"]}
        return result

    monkeypatch.setattr(bench_facenet, "run_worker", run_worker)
    out = tmp_path / "facenet.json"
    assert bench_facenet.main(["--model", "m.onnx", "--json", str(out)]) == status
    assert json.loads(out.read_text())["failed"] is bool(status)
    assert ("FAILED" in capsys.readouterr().out) is bool(status)


def test_bench_daemon_rejects_zero_cameras():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_daemon.py"), "--cameras", "2", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--cameras 2 0: each must be 1 or more" in done.stderr


def test_bench_daemon_stops_the_broker_when_the_rtsp_server_does_not_start(tmp_path, monkeypatch):
    bench_daemon = load_bench("bench_daemon")
    stopped: list[str] = []

    class Part:
        port = 1

        def __init__(self, folder, *args):
            pass

        def start(self):
            pass

        def stop(self):
            stopped.append(type(self).__name__)

    class Broker(Part):
        pass

    class Rtsp(Part):
        def start(self):
            raise RuntimeError("the RTSP server did not start")

    monkeypatch.setattr(bench_daemon, "Mosquitto", Broker)
    monkeypatch.setattr(bench_daemon, "RtspServer", Rtsp)
    with pytest.raises(RuntimeError, match="did not start"):
        bench_daemon.run(1, 1, 5, 0, tmp_path, tmp_path, tmp_path, 20, clip=tmp_path / "c.mp4")
    assert stopped == ["Rtsp", "Broker"]  # the half-started server too


@pytest.mark.parametrize(
    "bad, says",
    [
        (["--batch", "1"], "--batch 1: must be 2 or more"),
        (["--batch", "0"], "--batch 0: must be 2 or more"),
        (["--python-ref", "/nonexistent/python"], "--python-ref /nonexistent/python: no such"),
        (["--python-ours", "/nonexistent/python"], "--python-ours /nonexistent/python: no such"),
    ],
)
def test_bench_mtcnn_refuses_a_batch_under_2_and_a_missing_interpreter(
    bench_mtcnn, bad, says, capsys
):
    with pytest.raises(SystemExit) as exit:
        bench_mtcnn.main(bad)
    assert exit.value.code == 2
    assert says in capsys.readouterr().err


def test_bench_streams_records_cuda_graphs_only_when_they_ran(monkeypatch):
    torch = pytest.importorskip("torch")
    bench_streams = load_bench("bench_streams")
    asked = bench_streams.argparse.Namespace(graphs=True, backend="torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_streams.graphs_ran(asked) is False  # the CPU: the backend turns them off
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench_streams.graphs_ran(asked) is True
    for other in ({"graphs": False, "backend": "torch"}, {"graphs": True, "backend": "openvino"}):
        assert bench_streams.graphs_ran(bench_streams.argparse.Namespace(**other)) is False


@pytest.fixture(scope="module")
def bench_arrivals() -> ModuleType:
    return load_bench("bench_arrivals")


@pytest.mark.parametrize(
    "bad, says",
    [
        (["--visits", "0"], "--visits 0: must be 1 or more"),
        (["--set", "tracking.lost_after_s"], "--set tracking.lost_after_s: expected KEY=VALUE"),
        (["--config", "demo"], "invalid choice: 'demo'"),
    ],
)
def test_bench_arrivals_refuses_no_visits_a_setting_without_value_and_an_unknown_config(
    bench_arrivals, bad, says, capsys
):
    with pytest.raises(SystemExit) as exit:
        bench_arrivals.main(bad)
    assert exit.value.code == 2
    assert says in capsys.readouterr().err


def test_bench_arrivals_runs_the_shipped_config_on_its_own_camera_broker_and_paths(
    bench_arrivals, tmp_path
):
    settings = bench_arrivals.adapted_config(
        "rtsp-example", tmp_path, "rtsp://127.0.0.1:1/door", 2, 3, tmp_path / "g.sqlite"
    )
    bench_arrivals.set_key(settings, "detection.full_scan_every", 1)
    bench_arrivals.set_key(settings, "tracking.lost_after_s", 1.0)
    assert settings["cameras"] == [{"name": "door", "url": "rtsp://127.0.0.1:1/door", "fps": 5}]
    assert settings["detection"]["full_scan_every"] == 1
    assert settings["detection"]["motion"] == {"check_every_s": 10}  # the rest kept
    assert settings["tracking"] == {"snapshots": True, "lost_after_s": 1.0}
    assert settings["mqtt"]["port"] == 2 and "tls" not in settings["mqtt"]
    assert settings["mqtt"]["home_assistant"] == {"enabled": True}
    assert settings["recognition"]["model"] == str(bench_arrivals.MODEL)
    assert settings["metrics"]["port"] == 3


def message(t: float, kind: str, track: int, identity: str | None, reason: str | None = None):
    payload = {"type": kind, "track_id": track, "identity": identity, "reason": reason}
    return (t, "facewatch/demo/events/door", payload)


def faces(t: float, n: int):
    return (t, "facewatch/demo/cameras/door/faces", {"faces": n})


def test_bench_arrivals_times_each_visit_from_the_servers_marks(bench_arrivals):
    marks = [("appear", 0, 100.0), ("leave", 0, 108.0), ("appear", 1, 124.0)]
    messages = [
        (100.1, "facewatch/demo/status", None),  # not JSON: skipped
        faces(100.3, 1),
        message(100.4, "confirmed", 1, None),  # a false stranger first
        message(100.5, "confirmed", 2, "lin-manuel-miranda"),
        message(101.0, "left", 1, None, "lost"),
        faces(109.4, 1),
        message(109.6, "left", 2, "lin-manuel-miranda", "lost"),
        faces(109.6, 0),
        message(124.5, "confirmed", 3, "lin-manuel-miranda"),  # the next loop, no leave yet
    ]
    result = bench_arrivals.analyse(marks, messages, stranger=False, ended=130.0)
    assert result["per_visit"] == [
        {
            "first_event_s": 0.4,
            "named_s": 0.5,
            "left_s": 1.6,
            "faces_0_s": 1.6,
            "tracks_announced": 1,
            "split_by_cut": 0,
            "false_unknown": 1,
        }
    ]
    assert result["summary"]["visits"] == 1
    assert result["summary"]["named_s"] == {"median": 0.5, "worst": 0.5, "missing": 0}
    stranger = bench_arrivals.analyse(marks, messages, stranger=True, ended=130.0)
    assert stranger["per_visit"][0]["unknown_s"] == 0.4
    assert stranger["per_visit"][0]["left_s"] is None  # the one announced left before he did
    # a glimpse announced as it left (reason lost) is not the stranger's announcement
    glimpse = [
        message(100.3, "confirmed", 9, None, "lost"),
        message(100.3, "left", 9, None, "lost"),
    ]
    decided = [message(101.0, "confirmed", 10, None), message(109.6, "left", 10, None, "lost")]
    stranger = bench_arrivals.analyse(marks, glimpse + decided, stranger=True, ended=130.0)
    assert stranger["per_visit"][0]["unknown_s"] == 1.0


def test_bench_arrivals_counts_a_wait_that_never_came_as_missing(bench_arrivals):
    marks = [("appear", 0, 100.0), ("leave", 0, 108.0), ("appear", 1, 124.0), ("leave", 1, 132.0)]
    messages = [
        message(100.5, "confirmed", 2, "lin-manuel-miranda"),
        message(103.0, "left", 2, "lin-manuel-miranda", "cut"),  # a false scene cut
        message(103.2, "confirmed", 3, "lin-manuel-miranda"),
        message(109.7, "left", 3, "lin-manuel-miranda", "lost"),
        faces(109.7, 0),
        message(124.9, "confirmed", 4, "lin-manuel-miranda"),
    ]
    summary = bench_arrivals.analyse(marks, messages, stranger=False, ended=140.0)["summary"]
    assert summary["visits"] == 2
    assert summary["left_s"] == {"median": 1.7, "worst": 1.7, "missing": 1}
    assert summary["named_s"] == {"median": 0.7, "worst": 0.9, "missing": 0}
    assert summary["split_by_cut"] == 1
    assert summary["false_unknown"] == 0


def test_bench_arrivals_marking_server_marks_each_loops_chosen_frames(capsys):
    rtsp_marked = load_bench("rtsp_marked")
    assert rtsp_marked.parse_marks("2:appear,4:leave") == {2: "appear", 4: "leave"}
    pushed: list[int] = []

    class Source:
        def emit(self, signal, value):
            pushed.append(value)
            return "ok"

    source = rtsp_marked.MarkingSource(Source(), 5, {2: "appear", 4: "leave"})
    assert [source.emit("push-buffer", k) for k in range(11)] == ["ok"] * 11
    assert pushed == list(range(11))
    lines = [line.split()[:3] for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        ["MARK", "appear", "0"],
        ["MARK", "leave", "0"],
        ["MARK", "appear", "1"],
        ["MARK", "leave", "1"],
    ]


def test_the_fairness_table_shows_a_group_without_images_as_a_dash() -> None:
    """A set without one race and gender (a filtered or small UTKFace) had a group of 0
    images: its missed share divided by zero and the whole table was lost."""
    bench_fairness = load_bench("bench_fairness")
    empty = {"images": 0, "missed_large": 0, "missed_small": 0, "pairs": 0}
    some = {"images": 8, "missed_large": 1, "missed_small": 2, "pairs": 0}
    group = {"near_duplicates_dropped": 0}
    result = {
        "config": {"threshold": 0.6},
        "groups": {"Asian female": empty | group, "all": some | group},
        "across_races": {},
    }
    rows = bench_fairness.table(result).splitlines()
    assert rows[1].split()[2:5] == ["0", "-", "-"], rows[1]
    assert rows[2].split()[1:4] == ["8", "12.5%", "25.0%"], rows[2]
