"""Starts the real `flightlog` server binary on a free port and points the real MLflow client at it."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import requests

BIN = os.environ.get("FLIGHTLOG_BIN", "target/debug/flightlog")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    """The server's base URL; MLFLOW_TRACKING_URI points at it for the whole session."""
    data = tempfile.mkdtemp(prefix="flightlog-mlflow-")
    port = _free_port()
    log = open(os.path.join(data, "server.log"), "wb")
    proc = subprocess.Popen(
        [BIN, "server", "--port", str(port), "--data", os.path.join(data, "data")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"flightlog server did not start; see {log.name}")
        time.sleep(0.1)
    os.environ["MLFLOW_TRACKING_URI"] = url
    # A 5xx is a bug here: fail at once instead of retrying for minutes.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture()
def client(server):
    import mlflow

    mlflow.set_tracking_uri(server)
    yield mlflow.MlflowClient(server)
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture()
def experiment(client):
    """A fresh experiment, set as the fluent API's current one."""
    import mlflow

    name = f"exp-{uuid.uuid4().hex[:12]}"
    exp = mlflow.set_experiment(name)
    return exp


def api(server, method, path, **kw):
    """A raw request to the server (for wire-level checks the client hides)."""
    return requests.request(method, f"{server}{path}", timeout=30, **kw)
