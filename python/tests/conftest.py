"""Fixtures: the real `flightlog` server binary on a free port with a temp data dir, and workspaces in both modes
(server and local). Set FLIGHTLOG_BIN to pick the binary; else target/{release,debug}/flightlog (newest)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Journals of this test session stay in a temp folder, never in the user's cache.
_SPOOL = tempfile.mkdtemp(prefix="flightlog-test-spool-")
os.environ["FLIGHTLOG_SPOOL"] = _SPOOL
os.environ.pop("FLIGHTLOG_TRACKING_URI", None)
os.environ.pop("FLIGHTLOG_RUN_ID", None)

try:  # headless matplotlib
    import matplotlib

    matplotlib.use("Agg")
except ImportError:  # pragma: no cover
    pass


def flightlog_bin() -> str:
    env = os.environ.get("FLIGHTLOG_BIN")
    if env:
        return env
    candidates = [os.path.join(REPO, "target", p, "flightlog") for p in ("release", "debug")]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        pytest.exit("no flightlog binary: run `cargo build -p flightlog-cli` first (or set FLIGHTLOG_BIN)", 2)
    return max(found, key=os.path.getmtime)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `flightlog server` process that can be stopped and restarted on the same port and data dir."""

    def __init__(self, data: str, port: int | None = None) -> None:
        self.data = data
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = open(os.path.join(os.path.dirname(data), f"server-{self.port}.log"), "ab")

    def start(self) -> "Server":
        self.proc = subprocess.Popen(
            [flightlog_bin(), "server", "--host", "127.0.0.1", "--port", str(self.port), "--data", self.data],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flightlog server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("flightlog server did not answer /health within 30 s")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One server for the session."""
    root = tmp_path_factory.mktemp("server")
    srv = Server(str(root / "data")).start()
    yield srv
    srv.stop()


@pytest.fixture
def own_server(tmp_path):
    """A server of the test's own (to stop and restart)."""
    srv = Server(str(tmp_path / "data")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def local_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("local") / "flightlog-data")


@pytest.fixture(params=["server", "local"])
def ws(request, server, local_dir):
    """A Workspace on the session's server, and one in local mode (embedded store)."""
    from flightlog import Workspace

    if request.param == "server":
        return Workspace(server.uri)
    return Workspace(data_dir=local_dir)


@pytest.fixture
def exp(ws):
    """A fresh experiment in `ws`."""
    from flightlog import Experiment

    return Experiment(ws, f"test-{uuid.uuid4().hex[:8]}")


def tiny_png(path: str) -> str:
    """Writes a valid 1x1 PNG to `path` (no imaging library needed)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)
    return path


def run_script(code: str, env: dict | None = None, cwd: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs Python `code` in a fresh interpreter (same venv), returning the completed process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SPOOL, ignore_errors=True)
