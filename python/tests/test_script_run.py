"""Script runs from Python: ScriptRunConfig, exp.submit (a detached supervisor over the native runner),
run.wait_for_completion, run.cancel, run.get_details and run.get_all_logs, against the real server binary."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import uuid

import pytest

from conftest import run_script

import flightlog
from flightlog import Experiment, Run, RunFailedError, ScriptRunConfig, Workspace
from flightlog.errors import InvalidArgumentError


@pytest.fixture
def sexp(server):
    return Experiment(Workspace(server.uri), f"script-{uuid.uuid4().hex[:8]}")


def write(dir, name: str, code: str) -> str:
    path = os.path.join(str(dir), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(code))
    return path


def gone(pid: int) -> bool:
    """The process has ended (a zombie left for a non-reaping init counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_successful_script_logs_through_the_sdk_into_the_submitted_run(sexp, tmp_path, capsys):
    write(tmp_path, "train.py", """
        import os, sys
        from flightlog import Run
        run = Run.get_context()
        for step in range(3):
            run.log("loss", 1.0 / (step + 1))
        print("args", sys.argv[1:], "attached", run.id == os.environ["FLIGHTLOG_RUN_ID"])
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/model.txt", "w") as f:
            f.write("weights")
        """)
    # The reference API's positional order: source_directory, script, arguments, environment, compute_target.
    config = ScriptRunConfig(str(tmp_path), "train.py", ["--lr", 0.1], None, "local")
    run = sexp.submit(config, tags={"kind": "smoke"})
    assert isinstance(run, Run)
    assert run.get_status() in ("Preparing", "Running", "Finalizing", "Completed")
    details = run.wait_for_completion(show_output=True)
    assert "args ['--lr', '0.1'] attached True" in capsys.readouterr().out
    assert details["status"] == "Completed"
    assert details["exitCode"] == 0
    assert details["error"] is None
    assert set(details["logFiles"]) == {"stdout"}
    assert details["tags"] == {"kind": "smoke"}
    assert details["properties"]["compute_target"] == "local"
    assert details["properties"]["command"].endswith("train.py --lr 0.1")
    assert run.get_metrics()["loss"] == [1.0, 0.5, 1.0 / 3]
    assert {"outputs/model.txt", "snapshot/train.py"} <= set(details["files"])


def test_a_failing_script_raises_with_its_exit_code_and_stderr_tail(sexp, tmp_path):
    write(tmp_path, "fail.py", """
        import sys
        for i in range(25):
            print(f"problem {i}", file=sys.stderr)
        sys.exit(3)
        """)
    run = sexp.submit(ScriptRunConfig(str(tmp_path), "fail.py"))
    with pytest.raises(RunFailedError) as e:
        run.wait_for_completion()
    assert e.value.exit_code == 3
    assert e.value.run_id == run.id
    text = str(e.value)
    assert "the command exited with code 3" in text
    assert "problem 24" in text and "problem 5" in text and "problem 4\n" not in text
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["code"] == "exit_code=3"


def test_max_run_duration_stops_the_script_and_fails_the_run(sexp, tmp_path):
    write(tmp_path, "slow.py", "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    t = time.time()
    run = sexp.submit(ScriptRunConfig(str(tmp_path), "slow.py", max_run_duration_seconds=1))
    details = run.wait_for_completion(raise_on_error=False)
    assert time.time() - t < 30
    assert details["status"] == "Failed"
    assert details["error"]["message"] == "timed out after 1 s"
    assert details["exitCode"] == 124


def test_cancel_stops_the_whole_process_group(sexp, tmp_path):
    pids = tmp_path / "pids.json"
    write(tmp_path, "spawn.py", f"""
        import json, os, subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        with open({str(pids)!r} + ".tmp", "w") as f:
            json.dump([os.getpid(), child.pid], f)
        os.rename({str(pids)!r} + ".tmp", {str(pids)!r})
        time.sleep(60)
        """)
    run = sexp.submit(ScriptRunConfig(str(tmp_path), "spawn.py"))
    deadline = time.time() + 30
    while not pids.exists() and time.time() < deadline:
        time.sleep(0.05)
    script_pid, child_pid = json.loads(pids.read_text())
    assert not gone(script_pid) and not gone(child_pid)
    run.cancel()
    assert run.get_status() == "Canceled"
    deadline = time.time() + 10
    while not (gone(script_pid) and gone(child_pid)) and time.time() < deadline:
        time.sleep(0.05)
    assert gone(script_pid) and gone(child_pid)
    details = run.wait_for_completion()  # Canceled is not an error
    assert details["status"] == "Canceled"
    assert details["exitCode"] == 130


def test_environment_and_commands(sexp, tmp_path):
    run = sexp.submit(ScriptRunConfig(str(tmp_path), command='printf "%s|" "$GREETING"', arguments=["x y", "z"],
                                      environment={"GREETING": "hi there"}))
    run.wait_for_completion()
    assert run.get_logs("stdout").endswith(" hi there|x y|z|\n")

    run = sexp.submit(ScriptRunConfig(str(tmp_path), command=["sh", "-c", 'echo "$FLIGHTLOG_RUN_ID $MLFLOW_RUN_ID"'],
                                      environment={"FLIGHTLOG_RUN_ID": "not-this-one"}))
    run.wait_for_completion()
    assert run.get_logs("stdout").endswith(f" {run.id} {run.id}\n")


def test_a_command_that_cannot_be_executed_fails_the_run_with_the_reason(sexp, tmp_path):
    run = sexp.submit(ScriptRunConfig(str(tmp_path), command=["./no-such-program"]))
    with pytest.raises(RunFailedError, match="cannot execute './no-such-program'"):
        run.wait_for_completion()
    assert run.get_details()["exitCode"] == 127


def test_the_script_outlives_the_submitting_interpreter(server, tmp_path):
    write(tmp_path, "late.py", "import time\ntime.sleep(1.5)\nprint('still here')\n")
    name = f"script-{uuid.uuid4().hex[:8]}"
    p = run_script(textwrap.dedent(f"""
        import flightlog
        exp = flightlog.Experiment(flightlog.Workspace({server.uri!r}), {name!r})
        run = exp.submit(flightlog.ScriptRunConfig({str(tmp_path)!r}, "late.py"))
        print(run.id, run.get_status())
        """))
    assert p.returncode == 0, p.stderr
    run_id, status = p.stdout.split()
    assert status == "Running"
    run = Run.get(Workspace(server.uri), run_id)
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_logs("stdout").endswith(" still here\n")


def test_get_all_logs_writes_every_stream_and_the_logs_folder(sexp, tmp_path):
    src = tmp_path / "src"
    write(src, "logs_demo.py", """
        import os, sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
        os.makedirs("logs", exist_ok=True)
        with open("logs/train.log", "w") as f:
            f.write("epoch 1 done\\n")
        """)
    run = sexp.submit(ScriptRunConfig(str(src), "logs_demo.py"))
    details = run.wait_for_completion()
    assert sorted(details["logFiles"]) == ["stderr", "stdout"]
    dest = tmp_path / "out"
    paths = run.get_all_logs(str(dest))
    assert sorted(os.path.relpath(p, dest) for p in paths) == ["logs/train.log", "stderr.txt", "stdout.txt"]
    stdout = (dest / "stdout.txt").read_text()
    assert stdout.endswith("Z to stdout\n") and stdout[10] == "T"
    assert (dest / "stderr.txt").read_text().endswith("Z to stderr\n")
    assert (dest / "logs" / "train.log").read_text() == "epoch 1 done\n"


def test_bad_configurations_are_refused_before_any_run_or_process(sexp, tmp_path, local_dir):
    with pytest.raises(InvalidArgumentError, match="not both"):
        ScriptRunConfig(str(tmp_path), script="a.py", command=["true"])
    with pytest.raises(InvalidArgumentError, match="needs a script"):
        ScriptRunConfig(str(tmp_path))
    with pytest.raises(InvalidArgumentError, match="environment must be a dict"):
        ScriptRunConfig(str(tmp_path), "a.py", environment=["A=1"])
    with pytest.raises(InvalidArgumentError, match="max_run_duration_seconds"):
        ScriptRunConfig(str(tmp_path), "a.py", max_run_duration_seconds=-1)
    with pytest.raises(InvalidArgumentError, match="compute_target 'gpu-cluster' is not a target here"):
        ScriptRunConfig(str(tmp_path), "a.py", compute_target="gpu-cluster")
    with pytest.raises(InvalidArgumentError, match="script 'missing.py' not found"):
        sexp.submit(ScriptRunConfig(str(tmp_path), "missing.py"))
    with pytest.raises(InvalidArgumentError, match="is not a folder"):
        sexp.submit(ScriptRunConfig(str(tmp_path / "nope"), command=["true"]))
    assert sexp.get_runs() == []
    local = Experiment(Workspace(data_dir=local_dir), "script-local")
    with pytest.raises(InvalidArgumentError, match="needs a tracking server"):
        local.submit(ScriptRunConfig(str(tmp_path), command=["true"]))
    assert local.get_runs() == []


def test_the_exit_code_decides_even_when_the_script_completes_its_own_run(sexp, tmp_path):
    write(tmp_path, "ends_itself.py", """
        import sys
        from flightlog import Run
        run = Run.get_context()
        run.log("x", 1.0)
        run.complete()
        print("completed by the script")
        sys.exit(2)
        """)
    run = sexp.submit(ScriptRunConfig(str(tmp_path), "ends_itself.py"))
    with pytest.raises(RunFailedError) as e:
        run.wait_for_completion()
    assert e.value.exit_code == 2
    assert run.get_logs("stdout").endswith(" completed by the script\n")
    assert run.get_metrics()["x"] == 1.0
