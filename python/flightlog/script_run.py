"""Script runs: :class:`ScriptRunConfig` and ``Experiment.submit`` — a script or command run as a tracked run.

``exp.submit(config)`` checks the configuration, creates the run (Queued) and starts a detached supervisor
(``python -m flightlog._supervise``) that drives it with the native runner — the same lifecycle as
``flightlog submit``: snapshot of the source directory, properties, the job in its own process group with the
tracking variables set (``FLIGHTLOG_*``, ``MLFLOW_*``), stdout/stderr captured live into the run's log streams,
``./logs`` synced, ``./outputs`` uploaded, and the outcome recorded. ``submit`` returns once the job has started;
the job and its supervisor go on after the submitting interpreter exits.

Script runs need a tracking server (``Workspace("http://host:port")``): in local mode the data folder's
embedded store belongs to one process at a time, so the job could not log into it while the supervisor holds
it; ``submit`` refuses with a clear error instead (start ``flightlog server --data DIR`` and use its URI).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Mapping as _Mapping

from .errors import FlightlogError, InvalidArgumentError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

    from .experiment import Experiment
    from .run import Run

__all__ = ["ScriptRunConfig", "RunFailedError"]

_TERMINAL = ("Completed", "Failed", "Canceled")

#: How long ``submit`` waits for the supervisor to start the job (it uploads the snapshot first).
_START_TIMEOUT = 300.0
#: How long ``run.cancel()`` waits for the supervisor to record Canceled.
_CANCEL_WAIT = 20.0


class RunFailedError(FlightlogError, RuntimeError):
    """A submitted run ended Failed (raised by ``run.wait_for_completion(raise_on_error=True)``).

    ``run_id``, ``error`` (the run's error details: message, code, details with the last lines of stderr) and
    ``exit_code`` say what happened.
    """

    code = "RUN_FAILED"

    def __init__(self, message: str, run_id: str = "", error: Optional[Dict[str, Any]] = None,
                 exit_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.error = error or {}
        self.exit_code = exit_code


class ScriptRunConfig:
    """What to run: a Python ``script`` (run with this interpreter) or a ``command``, in ``source_directory``.

    - ``script``: a path relative to ``source_directory``, run as ``sys.executable script *arguments``;
    - ``command``: a list (``["bash", "train.sh"]``, ``arguments`` appended) or a string run by ``/bin/sh -c``
      (``arguments`` appended, shell-quoted). ``script`` and ``command`` are exclusive; one is required.
    - ``environment``: extra environment variables for the job (a dict of str to str); the tracking variables
      (``FLIGHTLOG_RUN_ID``...) are always set by flightlog.
    - ``compute_target``: where the job runs; ``None`` or ``"local"``, this machine (the one target there is).
    - ``max_run_duration_seconds``: the job is stopped after this long and the run is Failed (timed out).

    The arguments come in the reference API's order, so a call written for it works positionally too.
    """

    def __init__(self, source_directory: str = ".", script: Optional[str] = None, arguments: Sequence[Any] = (),
                 environment: Optional[Mapping[str, str]] = None, compute_target: Optional[str] = None,
                 command: Union[None, str, Sequence[str]] = None,
                 max_run_duration_seconds: Optional[float] = None) -> None:
        if compute_target is not None and (not isinstance(compute_target, str)
                                           or compute_target.strip().lower() != "local"):
            raise InvalidArgumentError(
                f"compute_target {compute_target!r} is not a target here: jobs run on this machine, so pass "
                "compute_target='local' or leave it out")
        if script is not None and command is not None:
            raise InvalidArgumentError("ScriptRunConfig takes a script or a command, not both")
        if script is None and command is None:
            raise InvalidArgumentError("ScriptRunConfig needs a script (e.g. script='train.py') or a command")
        if script is not None and (not isinstance(script, str) or not script):
            raise InvalidArgumentError(f"script must be a non-empty str, not {script!r}")
        if isinstance(arguments, (str, bytes)):
            raise InvalidArgumentError("arguments must be a list of arguments, not one string")
        if command is not None and not isinstance(command, str):
            command = [str(c) for c in command]
            if not command or not command[0]:
                raise InvalidArgumentError("command must not be empty")
        elif command is not None and not command.strip():
            raise InvalidArgumentError("command must not be empty")
        env: Dict[str, str] = {}
        if environment is not None:
            if not isinstance(environment, _Mapping):
                raise InvalidArgumentError(f"environment must be a dict of str to str, not {type(environment).__name__}")
            for k, v in environment.items():
                if not isinstance(k, str) or not k or "=" in k or "\0" in k:
                    raise InvalidArgumentError(f"environment variable name {k!r} is not valid")
                env[k] = str(v)
        if max_run_duration_seconds is not None:
            if isinstance(max_run_duration_seconds, bool) or not isinstance(max_run_duration_seconds, (int, float)) \
                    or not max_run_duration_seconds > 0:
                raise InvalidArgumentError(
                    f"max_run_duration_seconds must be a positive number, not {max_run_duration_seconds!r}")
        self.source_directory = os.fspath(source_directory)
        self.script = script
        self.arguments = [str(a) for a in arguments]
        self.command = command
        self.environment = env
        self.max_run_duration_seconds = max_run_duration_seconds
        self.compute_target = "local"

    def _command(self) -> List[str]:
        if self.script is not None:
            return [sys.executable, self.script, *self.arguments]
        if isinstance(self.command, str):
            line = " ".join([self.command, *(shlex.quote(a) for a in self.arguments)])
            return ["/bin/sh", "-c", line]
        return [*self.command, *self.arguments]

    def _check(self) -> str:
        """The absolute source directory, after checking it and the script exist (before anything starts)."""
        src = os.path.abspath(self.source_directory)
        if not os.path.isdir(src):
            raise InvalidArgumentError(f"source_directory {self.source_directory!r} is not a folder")
        if self.script is not None and not os.path.isfile(os.path.join(src, self.script)):
            raise InvalidArgumentError(f"script {self.script!r} not found in source_directory {src!r}")
        return src

    def __repr__(self) -> str:
        what = f"script={self.script!r}" if self.script is not None else f"command={self.command!r}"
        return f"ScriptRunConfig(source_directory={self.source_directory!r}, {what}, arguments={self.arguments!r})"


def submit(experiment: "Experiment", config: ScriptRunConfig, tags: Optional[Mapping[str, str]] = None) -> "Run":
    """``Experiment.submit``: creates the run and starts its supervisor; returns once the job has started."""
    from . import _native
    from .run import Run

    if not isinstance(config, ScriptRunConfig):
        raise TypeError(f"submit takes a ScriptRunConfig, not {type(config).__name__}")
    ws = experiment.workspace
    if ws.uri is None:
        raise InvalidArgumentError(
            "exp.submit needs a tracking server: in local mode the job could not log into the data folder the "
            f"supervisor holds. Start `flightlog server --data {ws.data_dir}` and use Workspace('http://host:port')")
    src = config._check()
    spec: Dict[str, Any] = {
        "source_dir": src,
        "command": config._command(),
        "env": config.environment,
        "tags": {str(k): str(v) for k, v in (tags or {}).items()},
        "timeout_seconds": config.max_run_duration_seconds,
    }
    info = json.loads(_native.submit_create(ws._client, experiment.id, json.dumps(spec)))
    run = Run._from_info(ws, info, experiment=experiment)
    _start_supervisor(ws.uri, info["id"], experiment.id, spec)
    run._refresh()
    return run


def _start_supervisor(uri: str, run_id: str, experiment_id: str, spec: Dict[str, Any]) -> None:
    """Starts ``python -m flightlog._supervise`` in a session of its own (no terminal signal reaches it, and it
    outlives this interpreter) and waits until it says the job has started. The spec goes through its stdin
    (the environment may hold secrets that ``ps`` should not show)."""
    import select
    import subprocess
    import tempfile

    ready_r, ready_w = os.pipe()
    log = tempfile.NamedTemporaryFile(prefix=f"flightlog-supervisor-{run_id}-", suffix=".log", delete=False)
    env = dict(os.environ, FLIGHTLOG_SUPERVISOR_READY_FD=str(ready_w), FLIGHTLOG_SUPERVISOR_LOG=log.name)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flightlog._supervise", uri, run_id, experiment_id],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, pass_fds=(ready_w,),
            start_new_session=True, env=env, close_fds=True,
        )
    finally:
        os.close(ready_w)
        log.close()
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec).encode("utf-8"))
        proc.stdin.close()
        # Readiness: one byte once the job started, end-of-file if the supervisor died first.
        readable, _, _ = select.select([ready_r], [], [], _START_TIMEOUT)
        got = os.read(ready_r, 1) if readable else b"?"
    finally:
        os.close(ready_r)
        # The first process forks the supervisor off and exits at once (see flightlog._supervise).
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - it only reads its stdin and forks
            pass
    if got == b"":
        try:
            with open(log.name, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            text = ""
        raise FlightlogError(f"the run {run_id} could not be started: " + (text[-2000:] or "its supervisor exited"))


def wait_for_completion(run: "Run", show_output: bool = False, raise_on_error: bool = True) -> Dict[str, Any]:
    """``Run.wait_for_completion``: follows the run's pushed event stream until it ends."""
    import threading

    from . import _native

    def on_output(stream: str, text: str) -> None:
        if show_output:
            out = sys.stdout if stream == "stdout" else sys.stderr
            out.write(text)
            out.flush()

    ws = run.workspace
    if ws.uri is None:
        _poll_local(run, on_output)
    else:
        result: Dict[str, Any] = {}

        def follow() -> None:
            try:
                result["run"] = _native.wait_for_run(ws._client, run.id, on_output)
            except BaseException as e:  # handed to the waiting thread
                result["error"] = e

        # The native wait runs in a thread so that Ctrl-C reaches this one (the GIL is released meanwhile).
        t = threading.Thread(target=follow, name=f"flightlog-wait-{run.id}", daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.2)
        if "error" in result:
            raise result["error"]
    details = run.get_details()
    if raise_on_error and details["status"] == "Failed":
        error = details.get("error") or {}
        message = f"run {run.id} failed: {error.get('message', 'no error details')}"
        if error.get("details"):
            message += "\n" + error["details"]
        raise RunFailedError(message, run_id=run.id, error=error, exit_code=details.get("exitCode"))
    return details


def _poll_local(run: "Run", on_output: Any) -> None:
    """Local mode has no event stream: the status and the new output are read a few times a second."""
    offsets: Dict[str, int] = {}
    while True:
        status = run.get_status()
        for s in run.workspace._call("list_logs", run=run.id):
            name = s["name"]
            while offsets.get(name, 0) < s["length"]:
                piece = run.workspace._call("read_log", run=run.id, stream=name, offset=offsets.get(name, 0),
                                            max_bytes=1 << 20)
                on_output(name, _strip_stamps(piece["data"]))
                if piece["next_offset"] == offsets.get(name, 0):
                    break
                offsets[name] = piece["next_offset"]
        if status in _TERMINAL:
            return
        time.sleep(0.25)


def _strip_stamps(text: str) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        stamp, sep, rest = line.partition(" ")
        out.append(rest if sep and len(stamp) == 27 and stamp.endswith("Z") and stamp[10:11] == "T" else line)
    return "".join(out)


def cancel(run: "Run") -> None:
    """``Run.cancel`` of a submitted run: asks its supervisor to stop the whole process group (SIGTERM, SIGKILL
    after a grace period) and waits for it to record Canceled."""
    from . import _native

    run._info = json.loads(_native.cancel_run(run.workspace._client, run.id, _CANCEL_WAIT))


def get_all_logs(run: "Run", destination: Optional[str] = None) -> List[str]:
    """``Run.get_all_logs``: every log stream of the run as ``<destination>/<stream>.txt`` (the stored text, each
    captured line with its UTC time stamp) and the files the job wrote to ``./logs`` under
    ``<destination>/logs/``. Returns the written paths."""
    dest = os.fspath(destination) if destination is not None else os.path.join("flightlog-logs", run.id)
    os.makedirs(dest, exist_ok=True)
    paths = []
    for s in sorted(run.workspace._call("list_logs", run=run.id), key=lambda s: s["name"]):
        path = os.path.join(dest, f"{s['name']}.txt")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(run.get_logs(s["name"]))
        paths.append(path)
    paths.extend(run.download_files(prefix="logs", output_directory=dest))
    return paths
