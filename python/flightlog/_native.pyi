"""Type stubs of the native module: the Rust client (batching, delivery, journal, embedded store)."""

from typing import Any, Dict, List, Optional, Tuple

class NativeClient:
    """One destination (a server URI, or a local data folder) and its background sender."""

    def __init__(self, uri: Optional[str], data_dir: Optional[str]) -> None: ...
    def call(self, op: str, args: str) -> str:
        """A control-plane request (JSON in, JSON out), with the GIL released; raises flightlog.errors.*."""
    def own_run(self, run_id: str) -> None:
        """Marks a run this process started: SIGTERM ends it Canceled, unless it ended first."""
    def disown_run(self, run_id: str) -> None:
        """The run has ended here: SIGTERM leaves it alone."""
    def create_run_async(self, new: str) -> str:
        """Queues a run's creation (NewRun JSON) after everything queued, journaled while unreachable; its id."""
    def update_run_async(self, run_id: str, patch: str) -> None:
        """Queues a run change (RunPatch JSON) after everything logged so far, journaled while unreachable."""
    def run(self, run_id: str) -> NativeRun:
        """A logging handle for run ``run_id``."""
    def read_scalars(self, run_id: str, name: str) -> Tuple[List[int], List[int], List[float]]:
        """Steps, times (µs) and values of a scalar series."""
    def put_artifact_file(self, run_id: str, path: str, file: str) -> str:
        """Uploads a local file as artifact ``path``; returns the ArtifactInfo JSON."""
    def put_artifact_bytes(self, run_id: str, path: str, data: bytes) -> str:
        """Uploads bytes as artifact ``path``; returns the ArtifactInfo JSON."""
    def get_artifact_file(self, run_id: str, path: str, file: str) -> str:
        """Downloads artifact ``path`` to local ``file``; returns the ArtifactInfo JSON."""
    def flush(self, timeout_seconds: float) -> bool:
        """Waits (GIL released) until everything enqueued is stored; False on timeout."""
    def deliver(self, timeout_seconds: float) -> bool:
        """Flushes until delivered, the timeout, or a server failing twice in a row; True when delivered."""
    def delivery(self) -> str:
        """JSON delivery state: enqueued/sent/pending points, spooled entries, rejections, last_error."""
    def close(self, timeout_seconds: float) -> bool:
        """Flushes and stops the sender (journaling whatever could not be sent)."""

class NativeRun:
    """Non-blocking logging into one run: every method enqueues and returns."""

    @property
    def id(self) -> str: ...
    def log_scalar(self, name: str, value: float, step: Optional[int] = None, description: Optional[str] = None) -> None: ...
    def log_text(self, name: str, value: str, step: Optional[int] = None, description: Optional[str] = None) -> None: ...
    def log_list(self, name: str, values: List[float], step: Optional[int] = None, description: Optional[str] = None) -> None: ...
    def log_row(self, name: str, row: Dict[str, Any], description: Optional[str] = None) -> None: ...
    def log_table(self, name: str, columns: Dict[str, List[Any]], description: Optional[str] = None) -> None: ...
    def log_json(self, name: str, schema: str, value_json: str, step: Optional[int] = None, description: Optional[str] = None) -> None: ...
    def log_image(self, name: str, data: bytes, media_type: str, step: Optional[int] = None, description: Optional[str] = None) -> None: ...
    def append_log(self, stream: str, text: str) -> None: ...
    def seed_kinds(self, kinds: Dict[str, str]) -> None:
        """Records the kinds of metrics already stored, so logging a name as another kind fails at once."""

# --- fork (os.register_at_fork, see workspace.py) ---
def prepare_fork() -> None:
    """Waits until no SQLite call of the embedded store is in progress and holds new ones back until after_fork."""
def after_fork() -> None:
    """Lets SQLite calls go on (in the parent and in the child)."""
def flush_on_sigterm(timeout_seconds: float) -> None:
    """From now on SIGTERM flushes this process's clients (natively, within the timeout), then kills it as before."""
def forget_sigterm_in_child() -> None:
    """In a forked child: SIGTERM back to its default action (the thread that flushed on it is the parent's)."""

# --- script runs (python/src/submit.rs) ---
def submit_create(client: NativeClient, experiment_id: str, spec: str) -> str:
    """Checks a submission (JSON) and creates its run, Queued; returns the run JSON. Starts nothing."""
def submit_supervise(client: NativeClient, run_id: str, experiment_id: str, spec: str, on_started: Any) -> int:
    """Drives the created run to its outcome (the supervisor's work); returns the exit code it stands for."""
def wait_for_run(client: NativeClient, run_id: str, on_output: Any) -> str:
    """Follows the run's event stream until it ends, calling on_output(stream, text); returns the run JSON."""
def cancel_run(client: NativeClient, run_id: str, within_seconds: float) -> str:
    """Cancels the run (a submitted active one through its supervisor); returns the run JSON."""
def snapshot_files(directory: str) -> List[Tuple[str, str]]:
    """(name under snapshot/, path) of the files a snapshot of directory keeps: submit's rules and limits."""

# --- TensorBoard export (python/src/tensorboard.rs) ---
def export_tensorboard(client: NativeClient, logdir: str, run_ids: List[str], experiment_id: Optional[str] = None,
                       recursive: bool = True) -> str:
    """Exports runs (or an experiment's top-level runs) as TensorBoard event files; returns the JSON report."""
