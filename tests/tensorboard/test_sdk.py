"""`flightlog.tensorboard` (the Python SDK): exports of Run and Experiment objects, in server and local mode, read
back by TensorBoard's own loader and tbparse (values, steps, wall times, run names compared exactly), and
`Tensorboard(...).start()` running the real TensorBoard, kept in sync while a run logs, stopped by stop() and by
garbage collection."""

import gc
import json
import os
import sys
import time
import urllib.request
import uuid

import numpy as np
import pytest
from tbparse import SummaryReader
from tensorboard.backend.event_processing import event_accumulator as ea

from flightlog import Experiment, Workspace
from flightlog.tensorboard import Tensorboard, TensorboardNotInstalledError, export_to_tensorboard


def f32(v):
    return float(np.float32(v))


def accumulator(path):
    acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    return acc


def series(api, run_id, name):
    """The stored series as the server returns it: steps, times (µs), values."""
    m = api.get(f"/api/v1/runs/{run_id}/metrics/{name}")
    return m["steps"], m["times"], m["values"]


def logged_run(ws, exp_name):
    exp = Experiment(ws, exp_name)
    run = exp.start_logging(display_name="sdk run")
    for i in range(50):
        run.log("loss", 1.0 / (i + 1) + 1e-7, step=3 * i)
    run.log("note", "hello *tb*")
    run.log_list("per_class", [0.5, 0.25, 0.125])
    kid = run.child_run("fold/1")
    kid.log("acc", 0.25, step=1)
    kid.log("acc", 0.75, step=2)
    kid.complete()
    run.flush()
    return exp, run, kid


@pytest.fixture(scope="module")
def server_ws(api):
    return Workspace(api.url)


def test_export_of_a_run_matches_the_server_exactly(api, server_ws, tmp_path):
    exp, run, kid = logged_run(server_ws, f"sdk-{uuid.uuid4().hex[:8]}")
    reports = export_to_tensorboard(run, str(tmp_path))
    assert [r["name"] for r in reports] == ["sdk run", "fold/1"]
    assert [r["dir"] for r in reports] == ["sdk run", "sdk run/fold_1"]
    steps, times, values = series(api, run.id, "loss")
    acc = accumulator(tmp_path / "sdk run")
    got = acc.Scalars("loss")
    assert [e.step for e in got] == steps
    assert [e.wall_time for e in got] == [t / 1e6 for t in times]
    assert [e.value for e in got] == [f32(v) for v in values]
    text = acc.Tensors("note")
    assert text[0].tensor_proto.string_val == [b"hello *tb*"]
    assert [e.step for e in acc.Scalars("per_class")] == [0, 1, 2]
    # tbparse sees the same, with the child nested in its parent's folder.
    df = SummaryReader(str(tmp_path), pivot=False, extra_columns={"dir_name", "wall_time"}).scalars
    kid_rows = df[df["dir_name"] == "sdk run/fold_1"]
    k_steps, k_times, k_values = series(api, kid.id, "acc")
    assert kid_rows["step"].tolist() == k_steps
    assert kid_rows["value"].tolist() == [f32(v) for v in k_values]
    assert kid_rows["wall_time"].tolist() == [t / 1e6 for t in k_times]
    loss_rows = df[(df["dir_name"] == "sdk run") & (df["tag"] == "loss")]
    assert loss_rows["step"].tolist() == steps
    # Re-exporting replaces what the first export wrote.
    export_to_tensorboard(run, str(tmp_path))
    assert len(accumulator(tmp_path / "sdk run").Scalars("loss")) == 50
    assert len([f for f in os.listdir(tmp_path / "sdk run") if "tfevents" in f]) == 1
    # Without recursion the child is left out.
    flat = tmp_path / "flat"
    assert [r["name"] for r in export_to_tensorboard(run, str(flat), recursive=False)] == ["sdk run"]
    assert not (flat / "sdk run" / "fold_1").exists()
    run.complete()


def test_export_of_an_experiment_and_bad_arguments(server_ws, tmp_path):
    exp, run, _ = logged_run(server_ws, f"sdk-exp-{uuid.uuid4().hex[:8]}")
    other = exp.start_logging(display_name="sdk run")  # same name: made unique
    other.log("loss", 2.0, step=0)
    other.flush()
    reports = export_to_tensorboard(exp, str(tmp_path))
    dirs = sorted(r["dir"] for r in reports)
    assert dirs == sorted(["sdk run", f"sdk run-{other.id[:8]}", "sdk run/fold_1"])
    mux = SummaryReader(str(tmp_path), pivot=False, extra_columns={"dir_name"}).scalars
    assert sorted(set(mux["dir_name"])) == dirs
    with pytest.raises(TypeError):
        export_to_tensorboard("not a run", str(tmp_path))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        export_to_tensorboard(run, str(blocker / "sub"))


def test_export_in_local_mode(tmp_path):
    ws = Workspace(data_dir=str(tmp_path / "data"))
    exp, run, _ = logged_run(ws, "local")
    run.complete()
    export_to_tensorboard(run, str(tmp_path / "tb"))
    got = accumulator(tmp_path / "tb" / "sdk run").Scalars("loss")
    stored = run.get_metrics("loss")["loss"]
    assert [e.step for e in got] == list(range(0, 150, 3))
    assert [e.value for e in got] == [f32(v) for v in stored]
    assert [e.step for e in accumulator(tmp_path / "tb" / "sdk run" / "fold_1").Scalars("acc")] == [1, 2]


def fetch_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def wait_for(check, timeout=60.0, what="condition"):
    deadline = time.time() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_tensorboard_start_serves_runs_syncs_and_stop_ends_it(server_ws, tmp_path):
    exp, run, kid = logged_run(server_ws, f"sdk-launch-{uuid.uuid4().hex[:8]}")
    tb = Tensorboard([run], port=0, sync_interval=0.5)
    url = tb.start()
    assert url.startswith("http://127.0.0.1:")
    logdir = tb.logdir
    runs = wait_for(lambda: (r := fetch_json(url + "data/runs")) and len(r) == 2 and r, what="runs list")
    assert sorted(runs) == ["sdk run", "sdk run/fold_1"]
    # The run is still active: new points reach the export, and TensorBoard.
    run.log("loss", 0.001, step=1000)
    run.flush()

    def last_step():
        data = fetch_json(url + "data/plugin/scalars/scalars?run=sdk%20run&tag=loss")
        return data and data[-1][1] == 1000

    wait_for(last_step, what="the new point in TensorBoard")
    # A child run created after start() is exported and shows up in TensorBoard as well.
    late = run.child_run("late")
    late.log("acc", 0.5, step=7)
    late.flush()
    runs = wait_for(lambda: (r := fetch_json(url + "data/runs")) and len(r) == 3 and r, what="the late child run")
    assert sorted(runs) == ["sdk run", "sdk run/fold_1", "sdk run/late"]
    data = wait_for(lambda: fetch_json(url + "data/plugin/scalars/scalars?run=sdk%20run/late&tag=acc"),
                    what="the late child's point")
    assert [(d[1], d[2]) for d in data] == [(7, 0.5)]
    late.complete()
    run.complete()
    pid = tb._state.proc.pid
    tb.stop()
    assert not tb.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(logdir), "the temporary logdir is removed"
    with pytest.raises(OSError):
        fetch_json(url + "data/runs")


def test_tensorboard_is_stopped_when_garbage_collected(server_ws, tmp_path):
    _, run, _ = logged_run(server_ws, f"sdk-gc-{uuid.uuid4().hex[:8]}")
    run.complete()
    tb = Tensorboard(run, local_root=str(tmp_path / "kept"), port=0)
    tb.start()
    pid = tb._state.proc.pid
    del tb
    gc.collect()
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
    assert (tmp_path / "kept" / "sdk run").is_dir(), "a logdir given by the caller is kept"


def test_missing_tensorboard_is_a_clear_error(server_ws, monkeypatch, tmp_path):
    _, run, _ = logged_run(server_ws, f"sdk-none-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(TensorboardNotInstalledError, match="pip install tensorboard"):
        Tensorboard(run, port=0).start()
