"""Starts the real `flightlog` server binary on a free port and points the real MLflow client at it."""

import os
import sys
import uuid

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flightlog_server import free_port as _free_port, running_server  # noqa: E402,F401 (used by test modules)


@pytest.fixture(scope="session")
def server():
    """The server's base URL; MLFLOW_TRACKING_URI points at it for the whole session."""
    with running_server("flightlog-mlflow-") as url:
        os.environ["MLFLOW_TRACKING_URI"] = url
        # A 5xx is a bug here: fail at once instead of retrying for minutes.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        yield url


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
