"""Starts the real `flightlog` server binary on a free port; helpers to call its HTTP API and the CLI."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flightlog_server import BIN, running_server  # noqa: E402 (BIN is used by test modules too)


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
    with running_server("flightlog-tb-") as url:
        yield Api(url)
