"""The same bad requests sent to MLflow's own server (3.17.2, SQLite backend) and to flightlog: the HTTP status
and `error_code` must agree."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import requests

from conftest import _free_port

# Where flightlog deliberately differs: it names unknown endpoints with ENDPOINT_NOT_FOUND (MLflow answers an
# HTML 404), and rejects an unknown run status with a 400 (MLflow silently ignores it).
CASES = [
    ("GET", "experiments/get-by-name", {"params": {"experiment_name": "missing-xyz"}}),
    ("GET", "experiments/get", {"params": {"experiment_id": "987654"}}),
    ("GET", "experiments/get", {"params": {"experiment_id": "abc"}}),
    ("POST", "experiments/create", {"json": {"name": "{exp_name}"}}),
    ("POST", "experiments/create", {"json": {}}),
    ("POST", "experiments/create", {"json": {"name": ""}}),
    ("POST", "experiments/delete", {"json": {"experiment_id": "987654"}}),
    ("POST", "experiments/search", {"json": {"max_results": 50001}}),
    ("POST", "experiments/search", {"json": {"max_results": 10, "filter": "name = 'a' OR name = 'b'"}}),
    ("GET", "runs/get", {"params": {"run_id": "0" * 32}}),
    ("GET", "runs/get", {"params": {"run_id": "nope"}}),
    ("GET", "runs/get", {"params": {}}),
    ("POST", "runs/log-parameter", {"json": {"run_id": "{run}", "key": "p", "value": "2"}}),
    ("POST", "runs/log-parameter", {"json": {"run_id": "{run}", "key": "p", "value": "1"}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "bad!", "value": 1, "timestamp": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "m", "value": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "m", "timestamp": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{dead}", "key": "m", "value": 1, "timestamp": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "0" * 32, "key": "m", "value": 1, "timestamp": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "m", "value": "NaN", "timestamp": 1}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "metrics": [
        {"key": "m", "value": 1, "timestamp": 1, "step": i} for i in range(1001)]}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "params": [
        {"key": "d", "value": "1"}, {"key": "d", "value": "1"}]}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "params": [
        {"key": f"q{i}", "value": "1"} for i in range(101)]}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{dead}", "tags": [{"key": "t", "value": "1"}]}}),
    ("POST", "runs/set-tag", {"json": {"run_id": "{dead}", "key": "t", "value": "1"}}),
    ("POST", "runs/delete", {"json": {"run_id": "{dead}"}}),
    ("POST", "runs/restore", {"json": {"run_id": "{run}"}}),
    ("POST", "runs/delete", {"json": {"run_id": "0" * 32}}),
    ("POST", "runs/create", {"json": {"experiment_id": "{eid}", "run_name": "a",
                                      "tags": [{"key": "mlflow.runName", "value": "b"}]}}),
    ("POST", "runs/create", {"json": {"experiment_id": "987654"}}),
    ("POST", "runs/update", {"json": {"run_id": "{dead}", "status": "FINISHED"}}),
    ("POST", "runs/log-inputs", {"json": {"run_id": "{run}", "datasets": [{"dataset": {"name": "d"}}]}}),
    ("POST", "experiments/set-experiment-tag", {"json": {"experiment_id": "{eid}", "key": "bad!", "value": "v"}}),
    ("POST", "experiments/update", {"json": {"experiment_id": "{eid}"}}),
    ("POST", "runs/delete-tag", {"json": {"run_id": "{run}", "key": "nope"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "metrics.a > 1 OR params.b = 'x'"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "metrics.a = 'x'"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "foo.a = 'x'"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "params.a > 'x'"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "max_results": 50001}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "order_by": ["metrics.a SIDEWAYS"]}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "page_token": "garbage"}}),
    ("GET", "metrics/get-history", {"params": {"run_id": "0" * 32, "metric_key": "m"}}),
    ("GET", "metrics/get-history", {"params": {"run_id": "{run}", "metric_key": "nothing"}}),
    ("GET", "metrics/get-history-bulk-interval", {"params": {"run_ids": ["{run}"] * 101, "metric_key": "m"}}),
    ("GET", "metrics/get-history-bulk-interval", {"params": {"run_ids": ["{run}"], "metric_key": "m",
                                                             "max_results": 3000}}),
]


@pytest.fixture(scope="module")
def mlflow_server():
    tmp = tempfile.mkdtemp(prefix="mlflow-ref-")
    port = _free_port()
    log = open(os.path.join(tmp, "server.log"), "wb")
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen(
        [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
         "--default-artifact-root", "mlflow-artifacts:/", "--artifacts-destination", f"{tmp}/artifacts",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"MLflow's server did not start; see {log.name}")
            time.sleep(0.2)
        yield url
    finally:
        # The server forks workers and may linger on SIGTERM: end the whole process group it leads, at once.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def fill(value, names):
    if isinstance(value, str):
        return value.format(**names) if "{" in value else value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value


def outcomes(base):
    """(status, error_code) of every case against one server, after the same setup."""
    s = requests.Session()

    def call(method, path, **kw):
        return s.request(method, f"{base}/api/2.0/mlflow/{path}", timeout=30, **kw)

    exp_name = f"cmp-{time.time_ns()}"
    eid = call("POST", "experiments/create", json={"name": exp_name}).json()["experiment_id"]
    new_run = lambda: call("POST", "runs/create", json={"experiment_id": eid, "start_time": 1}).json()["run"]["info"]["run_id"]
    run, dead = new_run(), new_run()
    call("POST", "runs/delete", json={"run_id": dead})
    call("POST", "runs/log-parameter", json={"run_id": run, "key": "p", "value": "1"})
    names = {"exp_name": exp_name, "eid": eid, "run": run, "dead": dead}
    out = []
    for method, path, kw in CASES:
        r = call(method, path, **fill(kw, names))
        code = r.json().get("error_code") if r.headers.get("content-type", "").startswith("application/json") else None
        out.append((r.status_code, code))
    return out


def test_error_statuses_and_codes_match_mlflow(server, mlflow_server):
    theirs = outcomes(mlflow_server)
    ours = outcomes(server)
    diffs = [
        f"{m} {p}: mlflow {t}, flightlog {o}"
        for (m, p, _), t, o in zip(CASES, theirs, ours)
        if t != o
    ]
    assert not diffs, "\n".join(diffs)
