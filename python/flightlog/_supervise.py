"""The detached supervisor of a run submitted with ``exp.submit``: ``python -m flightlog._supervise URI RUN EXP``.

It reads the submission (JSON) from stdin and drives the run from Preparing to its outcome with the native runner
(the same lifecycle as ``flightlog submit``), signalling the submitting process through the file descriptor in
``FLIGHTLOG_SUPERVISOR_READY_FD`` once the job has started. If the supervisor itself fails, the run is marked
Failed with the reason rather than left active forever. Its exit code is the job's (as ``flightlog submit``).
"""

from __future__ import annotations

import os
import sys


def main(argv: list) -> int:
    if len(argv) != 3:
        print("usage: python -m flightlog._supervise URI RUN_ID EXPERIMENT_ID < submission.json", file=sys.stderr)
        return 2
    uri, run_id, experiment_id = argv
    spec = sys.stdin.read()
    ready_fd = int(os.environ.pop("FLIGHTLOG_SUPERVISOR_READY_FD", "-1"))
    log = os.environ.pop("FLIGHTLOG_SUPERVISOR_LOG", None)
    if ready_fd >= 0:
        os.set_inheritable(ready_fd, False)  # the job must not hold the submitter's readiness pipe open
    # Detach for good: the submitter reaps this first process at once, and the supervisor (its child) is
    # nobody's child to wait for, so no zombie is left in a long-lived submitting interpreter (a notebook).
    if os.fork() > 0:
        os._exit(0)

    def started() -> None:
        nonlocal ready_fd
        if ready_fd >= 0:
            try:
                os.write(ready_fd, b"1")
            finally:
                os.close(ready_fd)
                ready_fd = -1

    from . import _native
    from .workspace import Workspace

    ws = Workspace(uri)
    try:
        code = _native.submit_supervise(ws._client, run_id, experiment_id, spec, started)
    except BaseException as e:  # the run must not stay active when its supervisor cannot go on
        _fail(ws, run_id, e)
        code = 1
    else:
        if log:
            try:
                os.unlink(log)  # nothing went wrong: the supervisor's own log is not needed
            except OSError:
                pass
    finally:
        if ready_fd >= 0:
            os.close(ready_fd)
    ws._client.close(30.0)
    return code


def _fail(ws, run_id: str, e: BaseException) -> None:
    import json
    import traceback

    traceback.print_exc()
    try:
        info = ws._call("get_run", id=run_id)
        if info["status"] not in ("Completed", "Failed", "Canceled"):
            error = {"message": f"the run's supervisor failed: {type(e).__name__}: {e}", "code": "supervisor",
                     "details": traceback.format_exc()[-4000:]}
            # The exit code (4, as `flightlog submit` exits on its own errors) is what `wait_for_completion`
            # takes as the sign that a submitted run's end is final.
            patch = {"status": "Failed", "error": error, "add_properties": {"exit_code": "4"}}
            ws._client.call("update_run", json.dumps({"id": run_id, "patch": patch}))
    except Exception:
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
