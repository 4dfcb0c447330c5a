"""`flightlog submit` of a script that logs through the real `mlflow` client: MLFLOW_TRACKING_URI / MLFLOW_RUN_ID
make `mlflow.start_run()` attach to the submitted run, and the submitter still records the outcome."""

import os
import re
import subprocess
import sys
import textwrap
import uuid

from flightlog_server import BIN

SCRIPT = """
    import sys
    import mlflow

    with mlflow.start_run() as run:
        print("mlflow run", run.info.run_id, run.info.experiment_id)
        mlflow.log_param("alpha", "0.1")
        for step in range(3):
            mlflow.log_metric("acc", 0.5 + step / 10, step=step)
    sys.exit(int(sys.argv[1]))
"""


def submit(server, tmp_path, code):
    (tmp_path / "train.py").write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    name = f"submit-{uuid.uuid4().hex[:8]}"
    p = subprocess.run(
        [BIN, "--server", server, "submit", "-e", name, "--show-output", "--source-dir", str(tmp_path), "--",
         sys.executable, "train.py", str(code)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    run_id = re.search(r"run ([0-9a-f]{32}) submitted", p.stderr).group(1)
    return p, run_id


def test_mlflow_logs_into_the_submitted_run(server, client, tmp_path):
    p, run_id = submit(server, tmp_path, 0)
    assert p.returncode == 0, p.stderr
    m = re.search(r"mlflow run ([0-9a-f]{32}) (\d+)", p.stdout)
    assert m and m.group(1) == run_id, p.stdout
    run = client.get_run(run_id)
    assert run.info.experiment_id == m.group(2)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"alpha": "0.1"}
    assert [x.value for x in client.get_metric_history(run_id, "acc")] == [0.5, 0.6, 0.7]


def test_the_script_exit_code_wins_over_mlflow_ending_the_run(server, client, tmp_path):
    p, run_id = submit(server, tmp_path, 4)
    assert p.returncode == 4, p.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
