"""Server-side ingest of event files under a run's `logs/`: files written by real tensorboardX, uploaded as
artifacts, become the run's metrics (exact values, steps, wall times); a re-upload adds nothing; and a script
run (`flightlog submit -- python script.py`) writing ./logs with tensorboardX streams its scalars while it runs."""

import glob
import os
import subprocess
import sys
import textwrap
import time
import urllib.parse
import uuid

import numpy as np
from tensorboardX import SummaryWriter

from conftest import BIN


def f32(v):
    return float(np.float32(v))


def upload(api, run_id, path, data):
    api.call("PUT", f"/api/v1/runs/{run_id}/artifacts/{urllib.parse.quote(path)}", raw=data,
             content_type="application/octet-stream")


def metric(api, run_id, name):
    try:
        return api.get(f"/api/v1/runs/{run_id}/metrics/{urllib.parse.quote(name, safe='')}")
    except AssertionError:
        return None


def wait_metric(api, run_id, name, ready, timeout=20):
    deadline = time.time() + timeout
    while True:
        m = metric(api, run_id, name)
        if m is not None and ready(m):
            return m
        assert time.time() < deadline, f"{name}: {m}"
        time.sleep(0.1)


def test_tensorboardx_files_uploaded_under_logs_become_metrics(api, tmp_path):
    w = SummaryWriter(str(tmp_path / "tbx"))
    for step in range(100):
        w.add_scalar("train/loss", 1.0 / (step + 1), step, walltime=1_700_000_000.0 + step * 0.5)
    w.add_text("notes", "hello", 3, walltime=1_700_000_100.0)
    w.add_histogram("w", np.arange(10.0), 4, walltime=1_700_000_101.0)
    w.close()
    (path,) = glob.glob(str(tmp_path / "tbx" / "*tfevents*"))
    data = open(path, "rb").read()
    run = api.post("/api/v1/runs", {"display_name": f"tbx-{uuid.uuid4().hex[:6]}"})
    name = "logs/" + os.path.basename(path)
    upload(api, run["id"], name, data)
    loss = wait_metric(api, run["id"], "train/loss", lambda m: len(m["values"]) == 100)
    assert loss["steps"] == list(range(100))
    assert loss["values"] == [f32(1.0 / (s + 1)) for s in range(100)]
    assert loss["times"] == [round((1_700_000_000.0 + s * 0.5) * 1e6) for s in range(100)]
    notes = wait_metric(api, run["id"], "notes/text_summary", lambda m: len(m["records"]) == 1)
    assert notes["records"][0]["step"] == 3 and "hello" in notes["records"][0]["value"]
    hist = wait_metric(api, run["id"], "w", lambda m: len(m["records"]) == 1)
    assert sum(hist["records"][0]["value"]["counts"]) == 10
    # The same file again, then a marker file: nothing was added twice.
    upload(api, run["id"], name, data)
    m = SummaryWriter(str(tmp_path / "marker"))
    m.add_scalar("marker", 1.0, 0)
    m.close()
    (marker,) = glob.glob(str(tmp_path / "marker" / "*tfevents*"))
    upload(api, run["id"], "logs/" + os.path.basename(marker), open(marker, "rb").read())
    wait_metric(api, run["id"], "marker", lambda m: len(m["values"]) == 1)
    assert len(metric(api, run["id"], "train/loss")["values"]) == 100


SCRIPT = textwrap.dedent("""
    import time
    from tensorboardX import SummaryWriter
    w = SummaryWriter("logs")
    for step in range(40):
        w.add_scalar("live/loss", 1.0 / (step + 1), step)
        w.flush()
        time.sleep(0.2)
    w.close()
    print("done")
""")


def test_script_run_logging_tensorboard_streams_while_running(api, tmp_path):
    src = tmp_path / "job"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    exp = f"submit-tb-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, FLIGHTLOG_TRACKING_URI=api.url, FLIGHTLOG_SPOOL=str(tmp_path / "spool"))
    proc = subprocess.Popen([BIN, "submit", "--experiment", exp, "--source-dir", str(src), "--",
                             sys.executable, "train.py"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        run_id = None
        deadline = time.time() + 60
        while run_id is None and time.time() < deadline:
            runs = api.get("/api/v1/runs?experiment_id=" + str(api.get(f"/api/v1/experiments/by-name/{exp}")["id"])) \
                if _exists(api, exp) else {"items": []}
            if runs["items"]:
                run_id = runs["items"][0]["id"]
            time.sleep(0.1)
        assert run_id, "the submitted run was not created"
        # Points arrive while the script is still running.
        seen_while_running = None
        while time.time() < deadline and proc.poll() is None:
            m = metric(api, run_id, "live/loss")
            if m is not None and m["values"]:
                seen_while_running = len(m["values"])
                break
            time.sleep(0.1)
        still_running = proc.poll() is None
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert seen_while_running and still_running, "no scalars while the script ran"
    assert seen_while_running < 40
    final = wait_metric(api, run_id, "live/loss", lambda m: len(m["values"]) == 40)
    assert final["steps"] == list(range(40))
    assert final["values"] == [f32(1.0 / (s + 1)) for s in range(40)]


def _exists(api, name):
    try:
        api.get(f"/api/v1/experiments/by-name/{name}")
        return True
    except AssertionError:
        return False
