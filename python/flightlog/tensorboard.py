"""TensorBoard views of flightlog runs: export them as TensorBoard event files, or launch TensorBoard over them.

>>> from flightlog.tensorboard import Tensorboard, export_to_tensorboard
>>> export_to_tensorboard(run, "tb-logs")            # one folder per run, child runs nested inside
>>> tb = Tensorboard([run])                           # a temporary logdir, kept in sync while the run logs
>>> url = tb.start()                                  # starts the real `tensorboard` executable
>>> tb.stop()                                         # also on garbage collection and interpreter exit

The export is native (the same Rust exporter as ``flightlog export tensorboard``): scalars as ``simple_value``
with their own steps and wall times, lists as series, rows and tables as text tables plus one series per numeric
column, text, images, histograms, and confusion matrices as tables. Exporting again into the same logdir
replaces what the previous export wrote. TensorBoard itself is not a dependency of flightlog: install it with
``pip install tensorboard`` to use :class:`Tensorboard`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from . import _native
from .experiment import Experiment
from .run import Run

__all__ = ["export_to_tensorboard", "Tensorboard", "TensorboardNotInstalledError"]

#: How long TensorBoard may take to print its URL.
START_TIMEOUT_SECONDS = 60.0


class TensorboardNotInstalledError(RuntimeError):
    """The ``tensorboard`` executable (or package) is not installed in this environment."""


def export_to_tensorboard(run_or_experiment: Union[Run, Experiment], logdir: str,
                          recursive: bool = True) -> List[Dict[str, Any]]:
    """Writes a run (or every top-level run of an experiment) as TensorBoard event files into ``logdir``: one
    folder per run named after its display name (made unique), child runs nested inside their parent's folder
    when ``recursive``. Re-exporting into the same logdir replaces, never duplicates, what flightlog wrote there
    before. Returns one report per exported run (``run_id``, ``name``, ``dir``, ``file``, point counts, and
    ``skipped`` notes such as SVG images TensorBoard cannot show)."""
    if isinstance(run_or_experiment, Run):
        run_or_experiment._flush_quietly()
        ws = run_or_experiment._workspace
        run_ids, experiment_id = [run_or_experiment.id], None
    elif isinstance(run_or_experiment, Experiment):
        ws = run_or_experiment.workspace
        run_ids, experiment_id = [], run_or_experiment.id
    else:
        raise TypeError(f"export_to_tensorboard needs a Run or an Experiment, not {type(run_or_experiment).__name__}")
    return _export(ws, run_ids, experiment_id, os.fspath(logdir), recursive)


def _export(ws: Any, run_ids: List[str], experiment_id: Optional[str], logdir: str,
            recursive: bool) -> List[Dict[str, Any]]:
    return json.loads(_native.export_tensorboard(ws._client, logdir, run_ids, experiment_id, bool(recursive)))


def _tensorboard_command() -> List[str]:
    """The command that starts TensorBoard: the executable next to this Python, on PATH, or the module."""
    here = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    if os.access(here, os.X_OK):
        return [here]
    found = shutil.which("tensorboard")
    if found:
        return [found]
    try:
        import tensorboard  # noqa: F401  (installed without its console script)
    except ImportError:
        raise TensorboardNotInstalledError(
            "TensorBoard is not installed: install it with `pip install tensorboard` (in the environment this "
            f"Python runs in: {sys.executable} -m pip install tensorboard), then call start() again"
        ) from None
    return [sys.executable, "-m", "tensorboard.main"]


class _Process:
    """What stopping needs (held apart from the Tensorboard object, so the finalizer does not keep it alive)."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.stop_event = threading.Event()
        self.syncer: Optional[threading.Thread] = None
        self.temporary_dir: Optional[str] = None

    def stop(self) -> None:
        self.stop_event.set()
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            except OSError:
                pass
        syncer, self.syncer = self.syncer, None
        if syncer is not None and syncer is not threading.current_thread():
            syncer.join(timeout=30)
        if self.temporary_dir is not None:
            shutil.rmtree(self.temporary_dir, ignore_errors=True)
            self.temporary_dir = None


class Tensorboard:
    """Runs the real TensorBoard over an export of ``runs``.

    ``runs`` is a Run, an Experiment (its top-level runs), or a list of runs; child runs are included, nested in
    their parent's folder. ``local_root`` is the logdir (default: a temporary folder removed at :meth:`stop`).
    :meth:`start` exports, starts ``tensorboard --logdir <local_root> --port <port>`` and returns its URL; while
    any of the runs is still active, the export is refreshed every ``sync_interval`` seconds when they logged
    something new. :meth:`stop` ends TensorBoard; it also runs when the object is garbage collected and at
    interpreter exit. ``port=0`` picks a free port.
    """

    def __init__(self, runs: Union[Run, Experiment, Sequence[Run]], local_root: Optional[str] = None,
                 port: int = 6006, sync_interval: float = 5.0) -> None:
        if isinstance(runs, Experiment):
            self._workspace = runs.workspace
            self._run_ids: List[str] = []
            self._experiment_id: Optional[str] = runs.id
        else:
            items: List[Run] = [runs] if isinstance(runs, Run) else list(runs)
            if not items or not all(isinstance(r, Run) for r in items):
                raise TypeError("Tensorboard needs a Run, a list of Runs, or an Experiment")
            if len({r._workspace for r in items}) != 1:
                raise ValueError("all runs must come from the same workspace")
            self._workspace = items[0]._workspace
            self._run_ids = [r.id for r in items]
            self._experiment_id = None
            self._runs = items
        self._local_root = os.fspath(local_root) if local_root is not None else None
        self._port = int(port)
        self._interval = float(sync_interval)
        self._state = _Process()
        self._finalizer = weakref.finalize(self, _Process.stop, self._state)
        self.url: Optional[str] = None
        #: The logdir TensorBoard reads (set by start()).
        self.logdir: Optional[str] = None

    def start(self) -> str:
        """Exports the runs, starts TensorBoard on them and returns its URL (``http://127.0.0.1:<port>/``).
        Raises :class:`TensorboardNotInstalledError` if TensorBoard is not installed, RuntimeError if it exits
        or prints no URL within a minute."""
        if self._state.proc is not None and self._state.proc.poll() is None:
            return self.url or ""
        command = _tensorboard_command()
        for r in getattr(self, "_runs", []):
            r._flush_quietly()
        if self._local_root is None:
            logdir = tempfile.mkdtemp(prefix="flightlog-tensorboard-")
            self._state.temporary_dir = logdir
        else:
            logdir = self._local_root
            os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        reports = _export(self._workspace, self._run_ids, self._experiment_id, logdir, True)
        self._report_ids = [r["run_id"] for r in reports]
        proc = subprocess.Popen(
            [*command, "--logdir", logdir, "--port", str(self._port), "--host", "127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._state.proc = proc
        self._state.stop_event.clear()
        try:
            self.url = _wait_for_url(proc)
        except BaseException:
            self._state.stop()
            raise
        syncer = threading.Thread(target=_keep_in_sync, name="flightlog-tensorboard-sync", daemon=True,
                                  args=(self._workspace, self._run_ids, self._experiment_id, logdir,
                                        self._report_ids, self._interval, self._state.stop_event))
        self._state.syncer = syncer
        syncer.start()
        return self.url

    def stop(self) -> None:
        """Stops TensorBoard (SIGTERM, then SIGKILL after 5 s) and the syncing; removes a temporary logdir."""
        self._state.stop()

    @property
    def running(self) -> bool:
        """Whether the TensorBoard process is alive."""
        proc = self._state.proc
        return proc is not None and proc.poll() is None

    def __enter__(self) -> "Tensorboard":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Tensorboard(url={self.url!r}, logdir={self.logdir!r}, running={self.running})"


def url_in(line: str) -> Optional[str]:
    """The URL of TensorBoard's start line, e.g. ``TensorBoard 2.21.0 at http://127.0.0.1:6006/ (Press ...)``."""
    i = line.find("TensorBoard ")
    if i < 0:
        return None
    rest = line[i:]
    j = rest.find(" at http")
    if j < 0:
        return None
    parts = rest[j + 4:].split()
    return parts[0] if parts else None


def _wait_for_url(proc: subprocess.Popen) -> str:
    """Reads TensorBoard's stderr until its URL line; keeps draining it afterwards (a full pipe would block it)."""
    found: Dict[str, Any] = {}
    ready = threading.Event()
    last: List[str] = []

    def drain() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if "url" not in found:
                url = url_in(line)
                if url:
                    found["url"] = url
                    ready.set()
                    continue
                last.append(line)
                del last[:-20]
        ready.set()

    threading.Thread(target=drain, name="flightlog-tensorboard-stderr", daemon=True).start()
    ready.wait(START_TIMEOUT_SECONDS)
    if "url" in found:
        return found["url"]
    if proc.poll() is not None:
        raise RuntimeError("tensorboard exited before serving:\n" + "\n".join(last))
    raise RuntimeError(f"tensorboard printed no URL within {START_TIMEOUT_SECONDS:.0f} s")


_ENDED = ("Completed", "Failed", "Canceled")


def _fingerprint(ws: Any, run_ids: Iterable[str], experiment_id: Optional[str]) -> Optional[list]:
    """Each followed run's metric counts, last times and child runs, and the experiment's top-level runs when a
    whole experiment is shown (so a run or child run created after start() is exported too); None once every run
    has ended (nothing more to follow)."""
    out: list = []
    active = False
    for rid in run_ids:
        info = ws._call("get_run", id=rid)
        active = active or info.get("status") not in _ENDED
        metrics = [(m.get("name"), m.get("count"), m.get("last_time")) for m in info.get("metrics") or []]
        children = sorted(c["id"] for c in ws._call("list_runs", query={"parent_id": rid}))
        out.append((rid, metrics, children))
    if experiment_id is not None:
        tops = ws._call("list_runs", query={"experiment_ids": [experiment_id], "top_level_only": True})
        active = active or any(r.get("status") not in _ENDED for r in tops)
        out.append(sorted(r["id"] for r in tops))
    return out if active else None


def _keep_in_sync(ws: Any, run_ids: List[str], experiment_id: Optional[str], logdir: str, report_ids: List[str],
                  interval: float, stop: threading.Event) -> None:
    """Re-exports while a run is active and its metrics or runs changed, then follows every run the export
    wrote; ends when stopped or every run has ended."""
    followed = list(report_ids)
    try:
        last = _fingerprint(ws, followed, experiment_id)
    except Exception:
        last = None
    while last is not None and not stop.wait(max(0.2, interval)):
        try:
            now = _fingerprint(ws, followed, experiment_id)
            if now is None or now != last:
                # A change, or every run ended: one more export (the last one catches the final points).
                reports = _export(ws, run_ids, experiment_id, logdir, True)
                followed = [r["run_id"] for r in reports]
                now = _fingerprint(ws, followed, experiment_id)
            last = now
        except Exception as e:  # the next round retries; a sync failure must not kill the caller's program
            print(f"flightlog.tensorboard: sync failed: {e}", file=sys.stderr)
