"""Where run history goes: a tracking server, or the embedded store in a local folder (local mode)."""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
import warnings
import weakref
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Optional, Tuple

from . import _native
from .errors import DeliveryWarning, FlightlogError

__all__ = ["Workspace", "CONFIG_RELATIVE_PATH"]

#: Where :meth:`Workspace.from_config` looks, in the working directory and each of its parents.
CONFIG_RELATIVE_PATH = os.path.join(".flightlog", "config.json")

_clients: Dict[Tuple[Optional[str], Optional[str]], "_native.NativeClient"] = {}
_clients_lock = threading.Lock()
_monitor_started = False


def _client_for(uri: Optional[str], data_dir: Optional[str]) -> "_native.NativeClient":
    """One native client (one sender thread, one journal) per destination, shared by every Workspace."""
    key = (uri, data_dir)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _native.NativeClient(uri, data_dir)
            _clients[key] = client
            if uri is not None:
                _start_monitor()
            _flush_main_process_on_sigterm()
        return client


_sigterm_flush_installed = False


def _flush_main_process_on_sigterm() -> None:
    """docker stop, a Kubernetes eviction or a Slurm time limit stop a training process with SIGTERM, whose
    default action skips every exit hook: what was logged and not yet sent was lost. The process now first
    delivers, within FLIGHTLOG_EXIT_FLUSH_TIMEOUT and at most 5 s (inside the usual 10 s grace before SIGKILL;
    what is left goes to the journal), then dies of the signal as it would have."""
    _flush_on_sigterm(min(_exit_flush_timeout(), 5.0))


def _start_monitor() -> None:
    """A daemon thread that turns each client's first outage, and its first rejection, into one warning each:
    they call for different things (waiting for the server; fixing the call that logs refused data)."""
    global _monitor_started
    if _monitor_started:
        return
    _monitor_started = True
    warned: set = set()

    def watch() -> None:
        import time

        while True:
            time.sleep(0.5)
            with _clients_lock:
                clients = list(_clients.items())
            for key, client in clients:
                if (key, "outage") in warned and (key, "rejection") in warned:
                    continue
                try:
                    state = json.loads(client.delivery())
                except Exception:  # pragma: no cover - interpreter shutting down
                    return
                rejection, error = state.get("last_rejection"), state.get("last_error")
                if rejection and (key, "rejection") not in warned:
                    warned.add((key, "rejection"))
                    warnings.warn(
                        f"flightlog: {rejection}; that data is not stored (see run.get_details()['delivery'])",
                        DeliveryWarning,
                        stacklevel=1,
                    )
                if error and error != rejection and (key, "outage") not in warned:
                    warned.add((key, "outage"))
                    warnings.warn(
                        f"flightlog: cannot deliver to {key[0] or key[1]} ({error}); logged data is kept on "
                        "disk and sent when the server is back (see run.get_details()['delivery'])",
                        DeliveryWarning,
                        stacklevel=1,
                    )

    threading.Thread(target=watch, name="flightlog-delivery-monitor", daemon=True).start()


def _flush_all_at_exit() -> None:
    # A copy of the values, without the lock: this also runs from a signal handler, which may interrupt a
    # holder of the lock on the same thread.
    clients = list(_clients.values())
    timeout = _exit_flush_timeout()
    for client in clients:
        try:
            # A server that is down now is not waited for: what is unsent goes to the journal, replayed by the
            # next start (or `flightlog sync`).
            client.deliver(timeout)
            client.close(0.5)
        except Exception:  # pragma: no cover - never fail interpreter exit
            pass


atexit.register(_flush_all_at_exit)

_DEFAULT_EXIT_FLUSH_SECONDS = 30.0


def _exit_flush_timeout() -> float:
    """FLIGHTLOG_EXIT_FLUSH_TIMEOUT in seconds: "30", "30s", "500ms" or "2m". Anything else warns and falls
    back to the default: a typo in it must never be what skips the flush at exit (the data would be lost)."""
    raw = os.environ.get("FLIGHTLOG_EXIT_FLUSH_TIMEOUT", "").strip().lower()
    if not raw:
        return _DEFAULT_EXIT_FLUSH_SECONDS
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?", raw)
    if match:
        return float(match.group(1)) * {"ms": 0.001, "m": 60.0}.get(match.group(2) or "s", 1.0)
    warnings.warn(
        f"flightlog: FLIGHTLOG_EXIT_FLUSH_TIMEOUT={raw!r} is not a duration (write 30, 30s, 500ms or 2m); "
        f"using {_DEFAULT_EXIT_FLUSH_SECONDS:g} s",
        stacklevel=2,
    )
    return _DEFAULT_EXIT_FLUSH_SECONDS


#: Every Workspace object alive, so that a forked child can give them clients of its own.
_live_workspaces: "weakref.WeakSet[Workspace]" = weakref.WeakSet()


def _forget_clients_in_child() -> None:
    """A forked child has none of its parent's sender threads: it must not wait on its parent's clients at exit,
    and what it logs must not queue up where no thread sends it. Every workspace, inherited or new, gets a
    client of the child's own on its next use, and inherited runs rebind to it (run._rebind_runs_in_child). The
    parent's clients may be dropped here: in a child, the native client and embedded store leave the parent's
    threads alone."""
    global _clients_lock, _monitor_started, _sigterm_flush_installed
    _native.after_fork()
    _native.forget_sigterm_in_child()
    _sigterm_flush_installed = False
    _clients_lock = threading.Lock()
    _clients.clear()
    _monitor_started = False
    for ws in list(_live_workspaces):
        ws._native_client = None
    run_module = sys.modules.get(__package__ + ".run")
    if run_module is not None:  # no Run exists before the module is loaded
        run_module._rebind_runs_in_child()


class _Anchor:
    """Keeps the multiprocessing after-fork registration alive (its registry holds values weakly)."""


_mp_anchor: Optional[_Anchor] = None


def _flush_at_multiprocessing_exit() -> None:
    """A multiprocessing child (Process, Pool worker) ends with os._exit, which skips atexit: the flush at exit
    is registered as one of its finalizers too. multiprocessing clears the finalizers a child inherits and then
    runs its after-fork callbacks, so the registration is made from one of those, set up in the parent."""
    global _mp_anchor
    util = sys.modules.get("multiprocessing.util")
    if _mp_anchor is not None or util is None:
        return
    _mp_anchor = _Anchor()

    def in_child(_: _Anchor) -> None:
        util.Finalize(None, _flush_all_at_exit, exitpriority=10)
        _flush_on_sigterm()

    util.register_after_fork(_mp_anchor, in_child)


def _flush_on_sigterm(timeout: Optional[float] = None) -> None:
    """Process.terminate() and Pool.terminate() (how `with Pool()` ends) stop a child with SIGTERM, whose
    default action skips every exit hook. Where SIGTERM still has that default, the process flushes first (within
    ``timeout``, by default FLIGHTLOG_EXIT_FLUSH_TIMEOUT), then dies of the signal as it would have. The handler
    is native: a Python one runs only when the main thread next looks, which a pool worker blocked on its queue's
    lock never did (it hung; see python/src/sigterm.rs). Installed once a process."""
    global _sigterm_flush_installed
    import signal

    if _sigterm_flush_installed or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    _sigterm_flush_installed = True
    _native.flush_on_sigterm(_exit_flush_timeout() if timeout is None else timeout)


def _before_fork() -> None:
    _flush_at_multiprocessing_exit()
    # The embedded store holds SQLite still (no call in progress) until after the fork, so the child can open
    # the same data folder on a clean slate (see flightlog_store's fork_gate).
    _native.prepare_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_native.after_fork,
        after_in_child=_forget_clients_in_child,
    )


def _workspace_for(uri: Optional[str], data_dir: Optional[str]) -> "Workspace":
    """The workspace of a destination: how a pickled one is made again."""
    return Workspace(uri) if uri is not None else Workspace(data_dir=data_dir)


def _find_config(start: Optional[str] = None) -> Optional[str]:
    directory = os.path.abspath(start or os.getcwd())
    while True:
        candidate = os.path.join(directory, CONFIG_RELATIVE_PATH)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _local_dir(uri: str) -> Optional[str]:
    """The data folder named by a local-mode URI (``file:///path``, ``file:path``, ``local``), else None."""
    if uri == "local":
        return os.environ.get("FLIGHTLOG_DATA") or "flightlog-data"
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if uri.startswith("file:"):
        return uri[len("file:") :]
    return None


class Workspace:
    """A place run history is recorded: a tracking server, or a local data folder.

    ``Workspace(uri)`` resolves its destination in this order:

    1. ``uri`` when given (``http://host:port`` for a server; ``file:///path`` or ``"local"`` for local mode);
    2. the ``FLIGHTLOG_TRACKING_URI`` environment variable;
    3. ``tracking_uri`` in a ``.flightlog/config.json`` found in the working directory or one of its parents
       (see :meth:`from_config`);
    4. otherwise local mode: runs are written through the embedded store into ``FLIGHTLOG_DATA`` or
       ``./flightlog-data``, which ``flightlog server --data ./flightlog-data`` serves.
    """

    def __init__(self, uri: Optional[str] = None, *, data_dir: Optional[str] = None) -> None:
        config_path = None
        if uri is None and data_dir is None:
            uri = os.environ.get("FLIGHTLOG_TRACKING_URI") or None
            if uri is None:
                config_path = _find_config()
                if config_path is not None:
                    uri, data_dir = self._read_config(config_path)
        self._init(uri, data_dir, config_path)

    def _init(self, uri: Optional[str], data_dir: Optional[str], config_path: Optional[str]) -> None:
        if uri is not None:
            local = _local_dir(uri)
            if local is not None:
                data_dir, uri = local, None
            else:
                uri = uri.rstrip("/")
                if not (uri.startswith("http://") or uri.startswith("https://")):
                    raise ValueError(f"tracking URI {uri!r} is not http(s)://host:port, file:///path or 'local'")
        if uri is None:
            data_dir = os.path.abspath(data_dir or os.environ.get("FLIGHTLOG_DATA") or "flightlog-data")
        else:
            data_dir = None
        self._uri: Optional[str] = uri
        self._data_dir: Optional[str] = data_dir
        self._config_path = config_path
        self._native_client: Optional["_native.NativeClient"] = None
        _live_workspaces.add(self)

    @staticmethod
    def _read_config(path: str) -> Tuple[Optional[str], Optional[str]]:
        with open(path, encoding="utf-8") as f:
            try:
                config = json.load(f)
            except ValueError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a JSON object like {{\"tracking_uri\": \"http://host:5000\"}}")
        uri = config.get("tracking_uri") or config.get("uri")
        data = config.get("data_dir") or config.get("data")
        if data is not None and not os.path.isabs(data):
            # relative to the folder holding .flightlog/
            data = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), data)
        return uri, data

    @classmethod
    def from_config(cls, path: Optional[str] = None) -> "Workspace":
        """The workspace described by a config file: ``path`` (a file, or a folder holding ``.flightlog/``), or
        the first ``.flightlog/config.json`` found upward from the working directory.

        The file is JSON: ``{"tracking_uri": "http://host:5000"}`` or, for local mode, ``{"data_dir": "runs"}``
        (relative to the folder that holds ``.flightlog/``). Raises ``FileNotFoundError`` when there is none.
        """
        found: Optional[str]
        if path is not None and os.path.isdir(path):
            found = os.path.join(path, CONFIG_RELATIVE_PATH)
            if not os.path.isfile(found):
                found = os.path.join(path, "config.json")
        elif path is not None:
            found = path
        else:
            found = _find_config()
        if found is None or not os.path.isfile(found):
            raise FileNotFoundError(
                f"no {CONFIG_RELATIVE_PATH} found"
                + (f" at {path}" if path else " in the working directory or its parents")
                + "; write one like {\"tracking_uri\": \"http://localhost:5000\"}"
            )
        uri, data_dir = cls._read_config(found)
        ws = cls.__new__(cls)
        ws._init(uri, data_dir, found)
        return ws

    # --- identity ------------------------------------------------------------------------------------------
    @property
    def uri(self) -> Optional[str]:
        """The tracking server's base URI, or None in local mode."""
        return self._uri

    @property
    def data_dir(self) -> Optional[str]:
        """The local data folder (local mode), or None when logging to a server."""
        return self._data_dir

    @property
    def is_local(self) -> bool:
        """True in local mode (the embedded store, no server)."""
        return self._uri is None

    def get_mlflow_tracking_uri(self) -> str:
        """The URI to give ``mlflow.set_tracking_uri``: MLflow clients logging there write into this same run
        history. In local mode there is no server: start one on the data folder (``flightlog server --data
        DIR``) and use its URI; this raises a ``FlightlogError`` saying so."""
        if self._uri is None:
            raise FlightlogError(
                f"local mode has no server for MLflow to log to; run `flightlog server --data {self._data_dir}` "
                "and use its URI (e.g. Workspace('http://127.0.0.1:5000').get_mlflow_tracking_uri())"
            )
        return self._uri

    def portal_url(self, path: str = "") -> Optional[str]:
        """The web portal's URL for ``path`` (e.g. ``runs/<id>``), or None in local mode."""
        if self._uri is None:
            return None
        return f"{self._uri}/{path.lstrip('/')}" if path else self._uri

    # --- plumbing ------------------------------------------------------------------------------------------
    @property
    def _client(self) -> "_native.NativeClient":
        client = self._native_client
        if client is None:
            client = self._native_client = _client_for(self._uri, self._data_dir)
        return client

    def _logged_client(self) -> Optional["_native.NativeClient"]:
        """The client this process logs to this destination with, if it has one (none is made): a run read
        with ``Run.get`` or ``get_children`` shares it with the handle that logged."""
        with _clients_lock:
            return _clients.get((self._uri, self._data_dir))

    def _call(self, op: str, **args: Any) -> Any:
        return json.loads(self._client.call(op, json.dumps(args)))

    def flush(self, timeout_seconds: float = 300) -> bool:
        """Waits until everything logged through this workspace is stored; False if ``timeout_seconds`` passed
        first (the rest stays queued and journaled, and is sent later)."""
        return self._client.flush(float(timeout_seconds))

    def list_experiments(self) -> list:
        """Every active experiment, newest first."""
        from .experiment import Experiment

        return [Experiment._from_info(self, e) for e in self._call("list_experiments")]

    def __reduce__(self) -> Any:
        # Sent to another process (the spawn start method, torch.multiprocessing.spawn, joblib, Ray), a
        # workspace is the same destination there, with a client of that process's own.
        return (_workspace_for, (self._uri, self._data_dir))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workspace) and (self._uri, self._data_dir) == (other._uri, other._data_dir)

    def __hash__(self) -> int:
        return hash((self._uri, self._data_dir))

    def __repr__(self) -> str:
        if self._uri is None:
            return f"Workspace(local: {self._data_dir!r})"
        return f"Workspace({self._uri!r})"
