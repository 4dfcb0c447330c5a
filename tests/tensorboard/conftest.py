"""Starts the real `flightlog` server binary on a free port; helpers to call its HTTP API and the CLI."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

BIN = os.environ.get("FLIGHTLOG_BIN", "target/debug/flightlog")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """The native HTTP API (urllib only) and the `flightlog` CLI, both pointed at one server."""

    def __init__(self, url):
        self.url = url

    def call(self, method, path, body=None, raw=None, content_type="application/json"):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read()!r}") from None
        try:
            return json.loads(payload)
        except ValueError:
            return payload

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, body):
        return self.call("POST", path, body)

    def cli(self, *args, check=True):
        env = dict(os.environ, FLIGHTLOG_TRACKING_URI=self.url, FLIGHTLOG_SPOOL="/nonexistent-flightlog-spool")
        p = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=120)
        if check:
            assert p.returncode == 0, f"flightlog {args}: {p.stderr}"
        return p


@pytest.fixture(scope="session")
def api():
    data = tempfile.mkdtemp(prefix="flightlog-tb-")
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
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"flightlog server did not start; see {log.name}")
        time.sleep(0.1)
    yield Api(url)
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
    shutil.rmtree(data, ignore_errors=True)
