"""Starts the real `flightlog` server binary on a free loopback port with a temp data dir, for the pytest
suites under tests/ (stdlib only, so any suite's venv can use it)."""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

BIN = os.environ.get("FLIGHTLOG_BIN", "target/debug/flightlog")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(prefix):
    """Yields the base URL of a server that stops, and whose data is removed, on exit."""
    data = tempfile.mkdtemp(prefix=prefix)
    port = free_port()
    log = open(os.path.join(data, "server.log"), "wb")
    proc = subprocess.Popen(
        [BIN, "server", "--port", str(port), "--data", os.path.join(data, "data")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log.name)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def _wait_healthy(url, proc, log_name):
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"flightlog server did not start; see {log_name}")
        time.sleep(0.1)
