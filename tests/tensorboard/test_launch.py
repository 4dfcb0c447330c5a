"""`flightlog tensorboard` starting the real TensorBoard over an export: its runs list fetched over HTTP, Ctrl-C
stopping it and removing the temporary logdir."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

from conftest import BIN


def test_launch_real_tensorboard(api):
    exp = api.post("/api/v1/experiments", {"name": f"launch-{uuid.uuid4().hex[:8]}"})
    run = api.post("/api/v1/runs", {"display_name": "alpha", "experiment_id": exp["id"]})
    api.post("/api/v1/runs", {"display_name": "beta", "experiment_id": exp["id"], "parent_id": run["id"]})
    api.post(f"/api/v1/runs/{run['id']}/batch", {"scalars": [{"name": "loss", "values": [1.0, 0.5]}]})
    env = dict(os.environ, FLIGHTLOG_TRACKING_URI=api.url,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.Popen([BIN, "--json", "tensorboard", "-e", exp["name"], "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["url"].startswith("http://")
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(info["url"] + "data/runs", timeout=5) as r:
                    runs = json.loads(r.read())
                if len(runs) == 2 or time.time() > deadline:
                    break
            except OSError:
                if time.time() > deadline:
                    raise
            time.sleep(0.5)
        assert sorted(runs) == ["alpha", "alpha/beta"]
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    assert rc == 0, proc.stderr.read()
    assert not os.path.exists(info["logdir"])
