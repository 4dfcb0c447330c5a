"""flightlog: self-hosted run history for ML training scripts.

>>> from flightlog import Workspace, Experiment
>>> ws = Workspace()                       # FLIGHTLOG_TRACKING_URI, .flightlog/config.json, or local mode
>>> with Experiment(ws, "mnist").start_logging() as run:
...     for step in range(100):
...         run.log("loss", 1.0 / (step + 1), step=step)

Logging calls enqueue into a native (Rust) sender that batches, retries and journals to disk off the GIL;
:meth:`Run.flush`, :meth:`Run.complete` and interpreter exit deliver everything.
"""

from __future__ import annotations

from . import errors
from .errors import ConflictError, FlightlogError, NotFoundError
from .experiment import Experiment
from .run import Run
from .script_run import RunFailedError, ScriptRunConfig
from .workspace import Workspace

__all__ = ["Workspace", "Experiment", "Run", "errors", "FlightlogError", "ConflictError", "NotFoundError", "ScriptRunConfig",
           "RunFailedError", "__version__"]

#: The SDK's version.
__version__ = "0.1.0"
