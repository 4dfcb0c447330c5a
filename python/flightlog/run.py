"""Runs: one execution of a training script and everything it records."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping as _Mapping
import sys
import threading
import time
import weakref

from . import _values
from .errors import FlightlogError, TransportError

TYPE_CHECKING = False  # kept off the import path: `typing` costs milliseconds
if TYPE_CHECKING:  # pragma: no cover
    import logging
    from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

    from .experiment import Experiment
    from .workspace import Workspace

_INFO = 20  # logging.INFO, without importing logging
# Characters of log text sent in one append: a character is at most 4 bytes of UTF-8, so a piece stays under the
# server's 16 MiB limit on one append.
_LOG_PIECE_CHARS = 4 * 1024 * 1024

__all__ = ["Run"]

_TERMINAL = ("Completed", "Failed", "Canceled")

_context_run: Optional["Run"] = None
_context_lock = threading.Lock()


#: Every Run object alive, so that a forked child can move them onto a sender of its own.
_live_runs: "weakref.WeakSet[Run]" = weakref.WeakSet()


def _rebind_runs_in_child() -> None:
    """A forked child inherits its parent's Run objects but not the sender threads behind them: each is
    unbound, and its next log call binds to a client of the child's own, so what the child logs into an
    inherited run is delivered like anything else it logs. Called by workspace._forget_clients_in_child."""
    for run in list(_live_runs):
        run._unbind()


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return ""


def _make_handler(run: "Run", level: int) -> "logging.Handler":
    """A handler that ships log records to a run's ``python`` log stream (batched, never blocking)."""
    import logging
    import traceback

    class RunLogHandler(logging.Handler):
        """Ships log records to a run's ``python`` log stream (batched with its metrics, never blocking)."""

        def __init__(self) -> None:
            super().__init__(level)

        def _append(self, stream: str, text: str) -> None:
            # The handle is looked up each time: a forked child gets its own sender (see _rebind_runs_in_child).
            native = run._native
            if len(text) <= _LOG_PIECE_CHARS:
                native.append_log(stream, text)
                return
            # A record longer than one append may be is sent in pieces (whole characters each), not lost.
            for start in range(0, len(text), _LOG_PIECE_CHARS):
                native.append_log(stream, text[start:start + _LOG_PIECE_CHARS])

        def emit(self, record: logging.LogRecord) -> None:
            try:
                ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                line = f"{ts}.{int(record.msecs):03d}Z {record.levelname} {record.name}: {record.getMessage()}\n"
                if record.exc_info:
                    line += "".join(traceback.format_exception(*record.exc_info))
                elif record.exc_text:
                    line += record.exc_text + "\n"
                if record.stack_info:
                    line += record.stack_info + "\n"
                self._append("python", line)
            except Exception:  # never let logging break the program
                self.handleError(record)

    return RunLogHandler()



def _run_from_info(workspace: "Workspace", info: Dict[str, Any], experiment: Optional["Experiment"]) -> Run:
    return Run._from_info(workspace, info, experiment=experiment)


def _snapshot_files(directory: Any) -> "List[Tuple[str, str]]":
    """(name under snapshot/, full path) of the files ``start_logging(snapshot_directory=...)`` keeps: the list
    and limits of ``flightlog submit``'s snapshot (ignore files, never-source folders, links left out)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"snapshot_directory {directory!r} is not a folder")
    from . import _native

    return [tuple(entry) for entry in _native.snapshot_files(directory)]


def _folder_files(path: str) -> "Tuple[List[Tuple[str, str]], List[str]]":
    """(relative name, full path) of every file under ``path``, sorted, following symlinked folders except one
    that leads back to a folder it is inside (a cycle); and the relative names of links that point nowhere."""
    files: List[Tuple[str, str]] = []
    dangling: List[str] = []

    def walk(folder: str, rel: str, inside: frozenset) -> None:
        real = os.path.realpath(folder)
        if real in inside:
            return
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            name = rel + entry.name
            if entry.is_dir():
                walk(entry.path, name + "/", inside | {real})
            elif entry.is_file():
                files.append((name, entry.path))
            elif entry.is_symlink() and not os.path.exists(entry.path):
                dangling.append(name)

    walk(path, "", frozenset())
    return files, dangling


class Run:
    """One run: its metrics, tags, properties, files, logs and status.

    Get one from :meth:`Experiment.start_logging`, :meth:`child_run`, :meth:`Run.get` or :meth:`Run.get_context`.
    Logging calls (``log``, ``log_list``, ``log_row``...) only enqueue: a native thread batches and delivers them,
    so they return in about a microsecond and never wait on the network. Everything logged is delivered at
    :meth:`flush`, :meth:`complete` (and its siblings) or interpreter exit.

    A run is a context manager: ``with exp.start_logging() as run:`` completes it at the end of the block, or
    fails it with the exception's text if the block raises.
    """

    _workspace: "Workspace"
    _info: Dict[str, Any]
    _id: str
    _experiment: Optional["Experiment"]
    _handlers: List[Tuple["logging.Logger", "logging.Handler"]]
    _native_run: Any
    _fresh: bool
    _offline: bool
    _scalar: Any

    # --- construction ----------------------------------------------------------------------------------------
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "create runs with Experiment(ws, name).start_logging(), run.child_run(), Run.get(ws, run_id) "
            "or Run.get_context()"
        )

    @classmethod
    def _from_info(cls, workspace: "Workspace", info: Dict[str, Any], experiment: Optional["Experiment"] = None,
                   fresh: bool = False) -> "Run":
        run = object.__new__(cls)
        run._workspace = workspace
        run._info = info
        run._id = info["id"]
        run._experiment = experiment
        run._handlers = []
        run._native_run = None
        run._fresh = fresh
        run._offline = False
        # The hot path: bound native methods, bound lazily for runs read from the server.
        run._scalar = run._bind_then_scalar
        _live_runs.add(run)
        return run

    def _unbind(self) -> None:
        """Forgets the native handle: the next log call binds a new one, on the workspace's current client."""
        self._native_run = None
        self._scalar = self._bind_then_scalar

    def _bind(self) -> Any:
        native = self._native_run
        if native is None:
            native = self._workspace._client.run(self._id)
            if not self._fresh:
                # Learn the kinds already stored, so logging a name as another kind fails at once.
                try:
                    kinds = {m["name"]: m["kind"] for m in self._workspace._call("list_metrics", run=self._id)}
                    native.seed_kinds(kinds)
                except FlightlogError:
                    pass
            self._native_run = native
            self._scalar = native.log_scalar
        return native

    def _bind_then_scalar(self, name: str, value: float, step: Optional[int] = None) -> None:
        self._bind().log_scalar(name, value, step)

    @property
    def _native(self) -> Any:
        return self._native_run if self._native_run is not None else self._bind()

    @classmethod
    def _create(cls, experiment: "Experiment", display_name: Optional[str] = None, description: Optional[str] = None,
                snapshot_directory: Optional[str] = None, parent: Optional["Run"] = None,
                tags: Optional[Mapping[str, str]] = None, properties: Optional[Mapping[str, str]] = None,
                run_id: Optional[str] = None, status: str = "Running") -> "Run":
        ws = experiment.workspace
        new: Dict[str, Any] = {
            "experiment_id": experiment.id,
            "status": status,
            "tags": {str(k): str(v) for k, v in (tags or {}).items()},
            "properties": {str(k): str(v) for k, v in (properties or {}).items()},
            "user": _user(),
            "host": _hostname(),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv) if sys.argv and sys.argv[0] else None,
        }
        if display_name is not None:
            new["display_name"] = display_name
        if description is not None:
            new["description"] = description
        if parent is not None:
            new["parent_id"] = parent.id
        if run_id is not None:
            new["id"] = run_id
        if new["command"] is None:
            del new["command"]
        # The snapshot is read and checked before the run exists, so a bad one leaves no run behind.
        snapshot = None if snapshot_directory is None else _snapshot_files(snapshot_directory)
        try:
            info = ws._call("create_run", new=new)
        except TransportError:
            if snapshot:
                raise  # its files go up before the run is handed out, and they cannot now
            info = _queue_creation(ws, new)
        run = cls._from_info(ws, info, experiment=experiment, fresh=True)
        run._bind()
        if status == "Running":
            ws._client.own_run(run.id)  # SIGTERM ends it Canceled (python/src/sigterm.rs)
        if snapshot:
            try:
                for rel, full in snapshot:
                    run.upload_file("snapshot/" + rel, full)
            except BaseException as e:
                run.fail(e)
                raise
        return run

    @classmethod
    def list(cls, experiment: "Experiment", tags: Any = None, properties: Any = None, status: Any = None,
             include_children: bool = False) -> List["Run"]:
        """The runs of ``experiment`` (same filters as :meth:`Experiment.get_runs`), newest first."""
        return experiment.get_runs(tags=tags, properties=properties, status=status, include_children=include_children)

    @classmethod
    def get(cls, workspace: "Workspace", run_id: str) -> "Run":
        """The existing run ``run_id`` (``NotFoundError`` if there is none)."""
        return cls._from_info(workspace, workspace._call("get_run", id=run_id))

    @classmethod
    def get_context(cls) -> "Run":
        """The run this script belongs to.

        Inside a script launched as a tracked run (``FLIGHTLOG_RUN_ID`` set, with ``FLIGHTLOG_TRACKING_URI`` or a
        config naming the server) it is that run. Otherwise it is an *offline* run recorded in local mode
        (``FLIGHTLOG_DATA`` or ``./flightlog-data``, experiment "Default"), completed when the interpreter exits.
        The same object is returned on every call.
        """
        global _context_run
        with _context_lock:
            if _context_run is not None:
                return _context_run
            from .experiment import Experiment
            from .workspace import Workspace

            run_id = os.environ.get("FLIGHTLOG_RUN_ID")
            if run_id:
                run = cls.get(Workspace(), run_id)
            else:
                ws = Workspace(data_dir=os.environ.get("FLIGHTLOG_DATA") or "flightlog-data")
                name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "interactive"
                run = Experiment(ws, "Default").start_logging(display_name=f"offline: {name}" if name else None)
                run._offline = True
                import atexit

                run._owner_pid = os.getpid()
                atexit.register(run._complete_at_exit)
            _context_run = run
            return run

    def _complete_at_exit(self) -> None:
        # A forked child inherits the hook: its exit is not the end of the parent's run.
        if getattr(self, "_owner_pid", None) != os.getpid():
            return
        try:
            if self.get_status() not in _TERMINAL:
                self.complete()
        except Exception:  # pragma: no cover - never fail interpreter exit
            pass

    # --- identity --------------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """The run's id: 32 lowercase hex characters."""
        return self._id

    @property
    def display_name(self) -> str:
        """The run's display name; assigning it renames the run."""
        return self._info.get("display_name", "")

    @display_name.setter
    def display_name(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"display_name must be a str, not {type(value).__name__}")
        self._patch(display_name=value)

    @property
    def description(self) -> str:
        """The run's description; assigning it changes it."""
        return self._info.get("description", "")

    @description.setter
    def description(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"description must be a str, not {type(value).__name__}")
        self._patch(description=value)

    @property
    def experiment(self) -> "Experiment":
        """The experiment the run belongs to."""
        if self._experiment is None:
            from .experiment import Experiment

            self._experiment = Experiment._by_id(self._workspace, self._info["experiment_id"])
        return self._experiment

    @property
    def workspace(self) -> "Workspace":
        """The workspace the run lives in."""
        return self._workspace

    @property
    def parent(self) -> Optional["Run"]:
        """The parent run, or None for a top-level run."""
        parent_id = self._info.get("parent_id")
        if not parent_id:
            return None
        return Run.get(self._workspace, parent_id)

    @property
    def status(self) -> str:
        """The status as last read (see :meth:`get_status` for a fresh read)."""
        return self._info["status"]

    # --- metrics ---------------------------------------------------------------------------------------------
    def log(self, name: str, value: Any, description: str = "", step: Optional[int] = None) -> None:
        """Logs a number or a string under ``name``; repeated calls build a series.

        ``step`` defaults to the next integer of the series. NaN and ±Inf are kept. A list raises ``TypeError``:
        use :meth:`log_list` for that.
        """
        tv = type(value)
        if (tv is float or tv is int) and not description:
            self._scalar(name, value, step)
            return
        self._log_other(name, value, description, step)

    def _log_other(self, name: str, value: Any, description: str, step: Optional[int]) -> None:
        v = _values.scalar_or_text(value)
        native = self._native
        if type(v) is str:
            native.log_text(name, v, step, description or None)
        else:
            native.log_scalar(name, v, step, description or None)

    def log_list(self, name: str, value: Iterable[Any], description: str = "", step: Optional[int] = None) -> None:
        """Logs a whole list of numbers at once (e.g. a learning-rate schedule) as one record."""
        values = _values.as_list(value, "log_list value")
        self._native.log_list(name, values, step, description or None)

    def log_row(self, name: str, description: Optional[str] = None, **columns: Any) -> None:
        """Appends one row to table ``name``: each keyword is a column (``log_row("roc", fpr=0.1, tpr=0.8)``)."""
        if not columns:
            raise ValueError("log_row needs at least one column, e.g. run.log_row('roc', fpr=0.1, tpr=0.8)")
        row = {k: _values.as_cell(v, f"column {k!r}") for k, v in columns.items()}
        self._native.log_row(name, row, description or None)

    def log_table(self, name: str, value: Mapping[str, Any], description: str = "") -> None:
        """Logs a table given as a dict of equal-length columns (``{"x": [...], "y": [...]}``); logging the
        same name again appends the rows."""
        if not isinstance(value, _Mapping):
            raise TypeError(f"log_table value must be a dict of columns, not {type(value).__name__}")
        if not value:
            raise ValueError("log_table value has no columns")
        columns = {str(k): _values.as_column(v, f"column {k!r}") for k, v in value.items()}
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"log_table columns must all have the same length; got {lengths}")
        self._native.log_table(name, columns, description or None)

    def log_image(self, name: str, path: Optional[str] = None, plot: Any = None, description: str = "",
                  step: Optional[int] = None) -> None:
        """Logs an image: a file (``path``: PNG, JPEG, GIF or SVG) or a matplotlib figure (``plot``: a Figure, or
        ``matplotlib.pyplot`` for its current figure), rendered to PNG. Give exactly one of them."""
        if (path is None) == (plot is None):
            raise ValueError("log_image needs exactly one of path= (an image file) or plot= (a matplotlib figure)")
        if path is not None:
            with open(os.fspath(path), "rb") as f:
                data = f.read()
            media = _values.media_type(data, os.fspath(path))
        else:
            savefig = getattr(plot, "savefig", None)
            if savefig is None:
                raise TypeError(f"plot must be a matplotlib Figure (or pyplot), not {type(plot).__name__}")
            import io

            buf = io.BytesIO()
            savefig(buf, format="png")
            data, media = buf.getvalue(), "image/png"
        self._native.log_image(name, data, media, step, description or None)

    def _log_json(self, name: str, schema: str, value: Any, description: str) -> None:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as e:
                raise ValueError(f"{schema} value is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise TypeError(f"{schema} value must be a dict or a JSON string, not {type(value).__name__}")
        if value.get("schema_type") == schema and isinstance(value.get("data"), dict):
            value = value["data"]
        payload = json.dumps(_values.to_json_safe(value), allow_nan=False)
        self._native.log_json(name, schema, payload, None, description or None)

    def log_confusion_matrix(self, name: str, value: Any, description: str = "") -> None:
        """Logs a confusion matrix: ``{"class_labels": [...], "matrix": [[...], ...]}`` (or the same wrapped as
        ``{"schema_type": "confusion_matrix", "data": {...}}``, or its JSON text)."""
        data = json.loads(value) if isinstance(value, str) else value
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]
        if not isinstance(data, dict) or "class_labels" not in data or "matrix" not in data:
            raise ValueError("a confusion matrix is {'class_labels': [...], 'matrix': [[...], ...]}")
        labels, matrix = list(data["class_labels"]), _values.to_json_safe(data["matrix"])
        if len(matrix) != len(labels) or any(not isinstance(r, list) or len(r) != len(labels) for r in matrix):
            raise ValueError(
                f"confusion matrix must be {len(labels)}x{len(labels)} (one row and column per class label)"
            )
        self._log_json(name, "confusion_matrix", dict(data, class_labels=labels, matrix=matrix), description)

    def log_accuracy_table(self, name: str, value: Any, description: str = "") -> None:
        """Logs an accuracy table (ROC / precision-recall data): a dict with ``probability_tables``,
        ``percentile_tables``, ``probability_thresholds``, ``percentile_thresholds`` and ``class_labels`` (or
        the same wrapped as ``{"schema_type": "accuracy_table", "data": {...}}``, or its JSON text)."""
        self._log_json(name, "accuracy_table", value, description)

    def log_residuals(self, name: str, value: Any, description: str = "") -> None:
        """Logs regression residuals as a histogram: ``{"bin_edges": [...], "bin_counts": [...]}``."""
        self._log_json(name, "residuals", value, description)

    def log_predictions(self, name: str, value: Any, description: str = "") -> None:
        """Logs predicted vs true values by bin: ``{"bin_averages": [...], "bin_errors": [...],
        "bin_counts": [...], "bin_edges": [...]}``."""
        self._log_json(name, "predictions", value, description)

    def get_metrics(self, name: Optional[str] = None, recursive: bool = False) -> Dict[str, Any]:
        """Every metric of the run (or only ``name``), read back from the store after flushing this process's
        pending data.

        Shapes: ``{name: value}`` for a single value, ``{name: [values]}`` for a series or a list (a list
        logged several times gives a list of lists), ``{name: {column: [values]}}`` for rows and tables, the
        artifact path for an image (a list of paths for several), the dict for a confusion matrix or another
        JSON value. ``recursive=True`` gives ``{run_id: {...}}`` for this run and all its descendants.
        """
        self._flush_quietly()
        if recursive:
            out = {self._id: self._metrics_of(self._id, name)}
            for child in self.get_children(recursive=True):
                out[child.id] = self._metrics_of(child.id, name)
            return out
        return self._metrics_of(self._id, name)

    def _metrics_of(self, run_id: str, name: Optional[str]) -> Dict[str, Any]:
        ws = self._workspace
        infos = ws._call("list_metrics", run=run_id)
        out: Dict[str, Any] = {}
        for info in infos:
            if name is not None and info["name"] != name:
                continue
            out[info["name"]] = self._metric_value(run_id, info)
        return out

    def _metric_value(self, run_id: str, info: Dict[str, Any]) -> Any:
        ws, kind, metric = self._workspace, info["kind"], info["name"]
        if kind == "scalar":
            _steps, _times, values = ws._client.read_scalars(run_id, metric)
            return values[0] if len(values) == 1 else values
        records = ws._call("read_records", run=run_id, name=metric)
        if kind in ("row", "table"):
            return _values.columns_from_records(records, list(info.get("columns") or []), kind)
        if kind == "text":
            vals = [r["value"] for r in records]
        elif kind == "list":
            vals = [_values.numbers_from_wire(r["value"]) for r in records]
        elif kind == "image":
            vals = [r["value"].get("path") if isinstance(r["value"], dict) else r["value"] for r in records]
        elif kind == "json":
            vals = [_values.json_from_wire(r["value"].get("value")) for r in records]
        else:
            vals = [_values.json_from_wire(r["value"]) for r in records]
        return vals[0] if len(vals) == 1 else vals

    # --- children --------------------------------------------------------------------------------------------
    def child_run(self, name: Optional[str] = None, run_id: Optional[str] = None) -> "Run":
        """Starts a child run of this one (same experiment). Use it as a context manager to complete it at the
        end of the block (failed if the block raises); parent and child statuses are independent."""
        return Run._create(self.experiment, display_name=name, parent=self, run_id=run_id)

    def create_children(self, count: Optional[int] = None, tag_key: Optional[str] = None,
                        tag_values: Optional[Iterable[str]] = None) -> List["Run"]:
        """Creates ``count`` child runs at once (for example one per worker), or one per value of
        ``tag_values``, each tagged ``tag_key=value``; returns them in order, NotStarted: each worker calls
        :meth:`start` on its own (logging works before that too)."""
        values = None if tag_values is None else [str(v) for v in tag_values]
        if (tag_key is None) != (values is None):
            raise ValueError("create_children: pass tag_key and tag_values together")
        if values is not None:
            if count is not None and count != len(values):
                raise ValueError(f"create_children: count={count} but {len(values)} tag values were given")
            return [Run._create(self.experiment, parent=self, tags={tag_key: v}, status="NotStarted") for v in values]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"create_children: count must be a whole number ≥ 0, not {count!r}")
        return [Run._create(self.experiment, parent=self, status="NotStarted") for _ in range(count)]

    def get_children(self, recursive: bool = False) -> List["Run"]:
        """The run's child runs (all descendants, depth first, with ``recursive=True``)."""
        infos = self._workspace._call("list_runs", query={"parent_id": self._id})
        children = [Run._from_info(self._workspace, i) for i in reversed(infos)]  # oldest first
        if not recursive:
            return children
        out: List[Run] = []
        for child in children:
            out.append(child)
            out.extend(child.get_children(recursive=True))
        return out

    # --- tags and properties ---------------------------------------------------------------------------------
    def tag(self, key: str, value: Optional[str] = None) -> None:
        """Sets tag ``key`` (to ``""`` when no value is given). Tags can be changed and removed."""
        self.set_tags({key: "" if value is None else value})

    def set_tags(self, tags: Union[Mapping[str, Any], Iterable[str]]) -> None:
        """Sets several tags: a dict ``{key: value}`` (or a list of keys, each set to ``""``)."""
        if isinstance(tags, str):
            raise TypeError("set_tags takes a dict of tags; use run.tag(key, value) for one")
        items = tags.items() if isinstance(tags, _Mapping) else ((k, "") for k in tags)
        self._patch_or_queue(set_tags={_key(k, "tag"): ("" if v is None else str(v)) for k, v in items})

    def get_tags(self) -> Dict[str, str]:
        """The run's tags, freshly read."""
        return dict(self._refresh().get("tags") or {})

    def remove_tags(self, tags: Union[str, Iterable[str]]) -> None:
        """Removes tags by key (a key or a list of keys); unknown keys are ignored."""
        keys = [tags] if isinstance(tags, str) else [_key(k, "tag") for k in tags]
        self._patch_or_queue(remove_tags=keys)

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Adds properties: write-once values. Re-adding a key with another value raises
        :class:`flightlog.errors.ConflictError` (a ValueError) and changes nothing."""
        if not isinstance(properties, _Mapping):
            raise TypeError(f"add_properties takes a dict, not {type(properties).__name__}")
        self._patch_or_queue(add_properties={_key(k, "property"): str(v) for k, v in properties.items()})

    def get_properties(self) -> Dict[str, str]:
        """The run's properties, freshly read."""
        return dict(self._refresh().get("properties") or {})

    # --- files -----------------------------------------------------------------------------------------------
    def upload_file(self, name: str, path_or_stream: Any) -> Dict[str, Any]:
        """Uploads a local file (or a binary stream) as the run's file ``name`` (a relative path such as
        ``outputs/model.pt``); returns its info (path, size)."""
        if hasattr(path_or_stream, "read"):
            data = path_or_stream.read()
            if isinstance(data, str):
                data = data.encode("utf-8")
            return json.loads(self._workspace._client.put_artifact_bytes(self._id, name, data))
        path = os.fspath(path_or_stream)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no file at {path!r} to upload")
        return json.loads(self._workspace._client.put_artifact_file(self._id, name, os.path.abspath(path)))

    def upload_folder(self, name: str, path: str) -> List[Dict[str, Any]]:
        """Uploads every file under the local folder ``path`` as ``name/<relative path>``; returns their infos.
        Symlinked folders are followed (but not back into a folder they are inside: a cycle ends); links that
        point nowhere are skipped with a warning naming them. The whole list is made before the first upload."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no folder at {path!r} to upload")
        prefix = name.strip("/")
        files, dangling = _folder_files(path)
        if dangling:
            import warnings

            warnings.warn(f"upload_folder: skipped {len(dangling)} link(s) that point nowhere: "
                          + ", ".join(dangling[:5]) + (" ..." if len(dangling) > 5 else ""), stacklevel=2)
        return [self.upload_file(f"{prefix}/{rel}" if prefix else rel, full) for rel, full in files]

    def get_file_names(self) -> List[str]:
        """Paths of every file stored with the run (images included), sorted."""
        items = self._workspace._call("list_artifacts", run=self._id, prefix=None, recursive=True)
        return sorted(i["path"] for i in items if not i.get("is_dir"))

    def download_file(self, name: str, output_file_path: Optional[str] = None) -> str:
        """Downloads the run's file ``name`` to ``output_file_path`` (a file path, or an existing folder to put
        it in; default: the working directory). Returns the local path."""
        target = os.fspath(output_file_path) if output_file_path is not None else os.path.basename(name)
        if os.path.isdir(target):
            target = os.path.join(target, os.path.basename(name))
        parent = os.path.dirname(os.path.abspath(target))
        os.makedirs(parent, exist_ok=True)
        self._workspace._client.get_artifact_file(self._id, name, os.path.abspath(target))
        return target

    def download_files(self, prefix: Optional[str] = None, output_directory: Optional[str] = None,
                       append_prefix: bool = True) -> List[str]:
        """Downloads every file under ``prefix`` (all files when None) into ``output_directory`` (default: the
        working directory), keeping their relative paths (without the prefix when ``append_prefix`` is False).
        Returns the local paths."""
        out_dir = os.fspath(output_directory) if output_directory is not None else os.getcwd()
        clean = prefix.strip("/") if prefix else None
        items = self._workspace._call("list_artifacts", run=self._id, prefix=clean, recursive=True)
        paths = []
        for item in sorted(items, key=lambda i: i["path"]):
            if item.get("is_dir"):
                continue
            rel = item["path"]
            if clean and not append_prefix and rel.startswith(clean + "/"):
                rel = rel[len(clean) + 1 :]
            target = os.path.join(out_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            self._workspace._client.get_artifact_file(self._id, item["path"], os.path.abspath(target))
            paths.append(target)
        return paths

    # --- logs ------------------------------------------------------------------------------------------------
    def capture_logging(self, logger: Union[None, str, "logging.Logger"] = None, level: int = _INFO) -> "logging.Handler":
        """Ships Python ``logging`` records of ``logger`` (default: the root logger) at ``level`` and above to
        the run's ``python`` log stream: time, level, logger name, message and exception text. The logger's
        level is lowered to ``level`` if it was stricter. The handler is removed when the run ends; returns it."""
        import logging

        target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
        handler = _make_handler(self, level)
        target.addHandler(handler)
        if target.getEffectiveLevel() > level:
            target.setLevel(level)
        self._handlers.append((target, handler))
        return handler

    def _remove_handlers(self) -> None:
        for target, handler in self._handlers:
            target.removeHandler(handler)
        self._handlers = []

    def get_logs(self, stream: str = "python") -> str:
        """The whole text of one of the run's log streams (``python``, ``stdout``...), after a flush."""
        self._flush_quietly()
        out, offset = [], 0
        while True:
            piece = self._workspace._call("read_log", run=self._id, stream=stream, offset=offset, max_bytes=1 << 24)
            out.append(piece["data"])
            if piece["next_offset"] >= piece["length"] or piece["next_offset"] == offset:
                break
            offset = piece["next_offset"]
        return "".join(out)

    # --- lifecycle -------------------------------------------------------------------------------------------
    def flush(self, timeout_seconds: float = 300) -> bool:
        """Waits until everything logged so far is stored (acknowledged by the server, or written by the local
        store). Returns False if ``timeout_seconds`` passed first: the rest stays queued (and journaled on disk)
        and is delivered later."""
        return self._workspace._client.flush(float(timeout_seconds))

    def _flush_quietly(self) -> None:
        client = self._workspace._logged_client()
        if client is not None:
            client.flush(60.0)

    def start(self) -> None:
        """Marks a NotStarted run (from :meth:`create_children`) Running; a run already Running stays so."""
        self._patch(status="Running")

    def complete(self) -> None:
        """Marks the run Completed, after delivering everything logged."""
        self._end("Completed")

    def fail(self, error_details: Any = None, error_code: Optional[str] = None) -> None:
        """Marks the run Failed with ``error_details`` (a message or an exception), after delivering everything
        logged."""
        error: Dict[str, Any] = {"message": "failed"}
        if isinstance(error_details, BaseException):
            import traceback

            error["message"] = f"{type(error_details).__name__}: {error_details}"
            error["details"] = "".join(
                traceback.format_exception(type(error_details), error_details, error_details.__traceback__)
            )
        elif error_details is not None:
            error["message"] = str(error_details)
        if error_code is not None:
            error["code"] = str(error_code)
        self._end("Failed", error)

    def cancel(self) -> None:
        """Marks the run Canceled, after delivering everything logged. A submitted run (``exp.submit``,
        ``flightlog submit``) that is still active is stopped by its supervisor instead: the whole process group
        gets SIGTERM (SIGKILL after a grace period), and this waits for it to record Canceled."""
        if "compute_target" in (self._info.get("properties") or {}) and self._workspace.uri is not None:
            from . import script_run

            return script_run.cancel(self)
        self._end("Canceled")

    def wait_for_completion(self, show_output: bool = False, raise_on_error: bool = True) -> Dict[str, Any]:
        """Waits until the run ends (pushed events, resumed after a disconnect) and returns :meth:`get_details`;
        ``show_output`` prints its stdout/stderr meanwhile (all of it, then live). A Failed run raises
        :class:`flightlog.RunFailedError` with its error details (the last lines of stderr) if ``raise_on_error``."""
        from . import script_run

        return script_run.wait_for_completion(self, show_output, raise_on_error)

    def get_all_logs(self, destination: Optional[str] = None) -> List[str]:
        """Writes every log stream to ``destination/<stream>.txt`` and the files of ``./logs`` to
        ``destination/logs/`` (default destination: ``flightlog-logs/<run id>``); returns the written paths."""
        from . import script_run

        return script_run.get_all_logs(self, destination)

    def _end(self, status: str, error: Optional[Dict[str, Any]] = None) -> None:
        self._remove_handlers()
        self._workspace._client.disown_run(self._id)
        logged = self._workspace._logged_client()
        # Deliver what was logged first (through any handle of this process); a server that keeps failing is
        # not waited for.
        delivered = logged.deliver(300.0) if logged is not None else True
        patch: Dict[str, Any] = {"status": status}
        if error is not None:
            patch["error"] = error
        if delivered:
            try:
                self._patch(**patch)
                return
            except TransportError:
                pass
        # The server cannot be reached: the status change is queued after the data and journaled with it.
        current = self._info.get("status")
        if current in _TERMINAL and current != status:
            from .errors import IllegalTransitionError

            raise IllegalTransitionError(f"run status cannot change from {current} to {status}")
        self._workspace._client.update_run_async(self._id, json.dumps(patch))
        self._info = dict(self._info, status=status)
        _warn_queued(f"run {self._id} will be marked {status}", stacklevel=4)

    def get_status(self) -> str:
        """The run's status name, freshly read: NotStarted, Queued, Preparing, Running, Finalizing,
        CancelRequested, Completed, Failed or Canceled."""
        return self._refresh()["status"]

    def get_details(self) -> Dict[str, Any]:
        """Everything about the run: ids, names, status, times (ISO 8601 UTC), tags, properties, error, user,
        host, command, log streams and files, and ``delivery``: this process's delivery state (points waiting,
        spooled to disk, last error). While the server cannot be reached, what this handle last read of the run
        is given, with ``logFiles`` and ``files`` None, so that ``delivery`` can be read during an outage."""
        try:
            info = self._refresh()
            logs: Optional[List[Dict[str, Any]]] = self._workspace._call("list_logs", run=self._id)
            files: Optional[List[str]] = self.get_file_names()
        except TransportError:
            info, logs, files = self._info, None, None
        return {
            "runId": self._id,
            "displayName": info.get("display_name", ""),
            "description": info.get("description", ""),
            "experimentId": str(info.get("experiment_id")),
            "parentRunId": info.get("parent_id"),
            "status": info.get("status"),
            "createdTimeUtc": _iso(info.get("created_time")),
            "startTimeUtc": _iso(info.get("start_time")),
            "endTimeUtc": _iso(info.get("end_time")),
            "error": info.get("error"),
            "tags": dict(info.get("tags") or {}),
            "properties": dict(info.get("properties") or {}),
            "params": dict(info.get("params") or {}),
            "user": info.get("user", ""),
            "host": info.get("host", ""),
            "command": info.get("command"),
            "logFiles": None if logs is None else {s["name"]: s["length"] for s in logs},
            "exitCode": _exit_code(info),
            "files": files,
            "metrics": [m["name"] for m in info.get("metrics") or []],
            "delivery": json.loads(self._workspace._client.delivery()),
            "portalUrl": self._workspace.portal_url(f"runs/{self._id}"),
        }

    # --- plumbing --------------------------------------------------------------------------------------------
    def _refresh(self) -> Dict[str, Any]:
        self._info = self._workspace._call("get_run", id=self._id)
        return self._info

    def _patch(self, **patch: Any) -> None:
        self._info = self._workspace._call("update_run", id=self._id, patch=patch)

    def _patch_or_queue(self, **patch: Any) -> None:
        """A tag or property change, sent now or, while the server cannot be reached, queued after what was
        logged (and journaled with it), as the points are: a training loop that tags its best epoch rides out a
        restart. A queued property is checked against what this handle knows of the run (write-once)."""
        try:
            self._patch(**patch)
        except TransportError:
            properties = dict(self._info.get("properties") or {})
            for key, value in (patch.get("add_properties") or {}).items():
                if properties.setdefault(key, value) != value:
                    from .errors import ConflictError

                    raise ConflictError(f"property {key!r} is already {properties[key]!r}; it cannot become {value!r}")
            self._workspace._client.update_run_async(self._id, json.dumps(patch))
            tags = dict(self._info.get("tags") or {})
            tags.update(patch.get("set_tags") or {})
            for key in patch.get("remove_tags") or []:
                tags.pop(key, None)
            self._info = dict(self._info, tags=tags, properties=properties)

    def __enter__(self) -> "Run":
        # The block ends the run only in the process that entered it: a child forked inside it that exits
        # (sys.exit, an exception) leaves it to the parent, which goes on.
        self._entered_pid = os.getpid()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if getattr(self, "_entered_pid", os.getpid()) != os.getpid():
            return  # what the child logged is delivered by its own exit flush
        if self._info.get("status") in _TERMINAL:
            self._remove_handlers()
            return
        from .errors import IllegalTransitionError

        try:
            if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
                self.complete()
            elif isinstance(exc, KeyboardInterrupt):
                self._end("Canceled")
            else:
                self.fail(exc)
        except IllegalTransitionError:
            # Ended meanwhile through another handle (the portal, the CLI, another process): that status
            # stands, and the block's own exception, if any, is what propagates.
            if self._refresh().get("status") not in _TERMINAL:
                raise

    def __reduce__(self) -> Any:
        # Pickled for another process (a spawn-method worker, torch.multiprocessing.spawn, joblib, Ray), a run
        # is its workspace and what was read of it; there it binds to that process's own client on first use,
        # and its end stays with the process that started it.
        return (_run_from_info, (self._workspace, self._info, self._experiment))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other._id == self._id and other._workspace == self._workspace

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"Run(id={self._id!r}, display_name={self.display_name!r}, status={self.status!r})"

    def _repr_html_(self) -> str:
        """A notebook cell's view: experiment, id, name, status and a link to the run's page in the portal."""
        import html

        url = self._workspace.portal_url(f"runs/{self._id}")
        if url:
            link = f'<a href="{html.escape(url)}" target="_blank" rel="noopener">Open in flightlog portal</a>'
        else:
            link = (f"local: {html.escape(str(self._workspace.data_dir))} "
                    f"(<code>flightlog server --data {html.escape(str(self._workspace.data_dir))}</code>)")
        try:
            exp = html.escape(self.experiment.name)
        except Exception:
            exp = html.escape(str(self._info.get("experiment_id")))
        return (
            "<table><tr><th>Experiment</th><th>Id</th><th>Name</th><th>Status</th><th>Details page</th></tr>"
            f"<tr><td>{exp}</td><td>{self._id}</td><td>{html.escape(self.display_name)}</td>"
            f"<td>{html.escape(self.status)}</td><td>{link}</td></tr></table>"
        )


def _key(k: Any, what: str) -> str:
    if not isinstance(k, str):
        raise TypeError(f"{what} keys must be str, not {type(k).__name__}")
    return k


def _exit_code(info: Dict[str, Any]) -> Optional[int]:
    """A submitted run's exit code (recorded with its outcome); None for other runs and active ones."""
    code = (info.get("properties") or {}).get("exit_code")
    return int(code) if code is not None and code.lstrip("-").isdigit() else None


def _queue_creation(ws: Any, new: Dict[str, Any]) -> Dict[str, Any]:
    """Queues a run's creation while the server cannot be reached (journaled, delivered before the run's data,
    as a run's end is) and returns what the server would have answered, as far as it is known here: a sweep
    that starts its next trial, or a child run, during a server restart goes on instead of raising."""
    run_id = ws._client.create_run_async(json.dumps(new))
    now = int(time.time() * 1_000_000)
    info = dict(new, id=run_id, lifecycle="Active", created_time=now, params={})
    info.setdefault("display_name", "")
    info.setdefault("description", "")
    if new.get("status") == "Running":
        info["start_time"] = now
    _warn_queued(f"run {run_id} will be created", stacklevel=5)
    return info


def _warn_queued(what: str, stacklevel: int) -> None:
    """The DeliveryWarning for a run change queued because the server cannot be reached (``stacklevel`` counts
    from this function to the caller's code)."""
    import warnings

    from .errors import DeliveryWarning

    warnings.warn(
        f"flightlog: the server cannot be reached; {what} when the queued data is delivered (it is journaled on "
        "disk meanwhile)",
        DeliveryWarning,
        stacklevel=stacklevel,
    )


def _iso(t: Optional[int]) -> Optional[str]:
    if t is None:
        return None
    secs, micros = divmod(int(t), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}Z"
