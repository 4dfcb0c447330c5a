"""Never lose, never block: server outage mid-logging, SIGKILL after a flush, interpreter exit, several
processes at once, and network trouble reported without raising."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from conftest import Server, run_script, tiny_png

from flightlog import Experiment, Run, Workspace
from flightlog.errors import DeliveryWarning


def _series(run, name):
    steps, _times, values = run.workspace._client.read_scalars(run.id, name)
    return steps, values


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_server_outage_mid_logging_every_point_once(own_server, kill, tmp_path):
    ws = Workspace(own_server.uri)
    run = Experiment(ws, "outage").start_logging()
    n_before, n_during, n_after = 20_000, 30_000, 20_000
    step = 0
    for _ in range(n_before):
        run.log("x", float(step), step=step)
        step += 1
    run.log_row("rows", i=0)
    assert run.flush(30)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(n_during):
            if k == 1000:
                own_server.stop(kill=kill)  # while batches are in flight
            run.log("x", float(step), step=step)  # never raises, never waits
            step += 1
        run.log("text", "during the outage")
        run.log_row("rows", i=1)
        run.log_image("img", path=tiny_png(str(tmp_path / "x.png")), step=7)
        logging_time = time.perf_counter() - t0
        assert not run.flush(1.0)  # cannot be delivered now: reports False, does not raise
        time.sleep(1.5)  # let the delivery monitor notice
    assert logging_time < 5, f"logging during the outage took {logging_time:.1f}s"
    state = ws._client.delivery()
    assert '"last_error":null' not in state.replace(" ", "")
    assert any(issubclass(w.category, DeliveryWarning) for w in caught)
    own_server.start()  # same port, same data dir
    for _ in range(n_after):
        run.log("x", float(step), step=step)
        step += 1
    assert run.flush(60)
    steps, values = _series(run, "x")
    total = n_before + n_during + n_after
    assert len(values) == total, f"{len(values)} points stored for {total} logged"
    assert steps == list(range(total)) and values == [float(i) for i in range(total)]
    m = run.get_metrics()
    assert m["text"] == "during the outage" and m["rows"] == {"i": [0, 1]}
    assert m["img"] in run.get_file_names()
    delivery = run.get_details()["delivery"]
    assert delivery["send_failures"] > 0 and delivery["pending_points"] == 0 and delivery["rejected_entries"] == 0
    assert delivery["last_error"] is None, "the outage is over, and so is its error"
    run.complete()
    assert run.get_status() == "Completed"


def test_complete_during_an_outage_neither_blocks_nor_raises(own_server):
    ws = Workspace(own_server.uri)
    run = Experiment(ws, "complete-outage").start_logging()
    run.log("x", 0.0)
    assert run.flush(30)
    own_server.stop()
    run.log("x", 0.5, step=0)
    run.flush(1)
    # The delivery warning sends people to get_details()['delivery']: it answers during the outage too.
    details = run.get_details()
    assert details["status"] == "Running" and details["files"] is None
    assert "cannot reach the server" in details["delivery"]["last_error"]
    # Tag changes are queued as points are, instead of raising.
    run.tag("best_epoch", "7")
    run.set_tags({"stage": "outage"})
    run.remove_tags("stage")
    t0 = time.perf_counter()
    with pytest.warns(DeliveryWarning, match="Completed"):
        with run:
            for i in range(1, 1000):
                run.log("x", float(i))
    assert time.perf_counter() - t0 < 20
    own_server.start()
    assert run.flush(60)
    assert run.get_status() == "Completed"
    tags = run.get_tags()
    assert tags["best_epoch"] == "7" and "stage" not in tags
    assert _series(run, "x")[1] == [0.0, 0.5] + [float(i) for i in range(1, 1000)]


def test_runs_and_properties_made_during_an_outage_are_queued(own_server):
    """A sweep's next trial, a child run and write-once properties during a server restart: queued with the data
    (journaled), delivered in order once the server is back, instead of raising in the middle of training."""
    ws = Workspace(own_server.uri)
    exp = Experiment(ws, "create-outage")
    parent = exp.start_logging(display_name="parent")
    parent.add_properties({"seed": "1"})
    assert parent.flush(30)
    own_server.stop()
    with pytest.warns(DeliveryWarning, match="will be created"):
        child = parent.child_run("child")
        workers = parent.create_children(tag_key="worker", tag_values=["a", "b"])
        trial = exp.start_logging(display_name="trial-2")
    assert child.get_details()["status"] == "Running" and child.get_details()["parentRunId"] == parent.id
    child.log("loss", 0.5)
    workers[1].log("loss", 2.0)
    trial.log("loss", 1.5)
    parent.add_properties({"seed": "1", "lr": "0.1"})  # the same value again is no change
    with pytest.raises(ValueError, match="already '1'"):
        parent.add_properties({"seed": "2"})
    with pytest.warns(DeliveryWarning):
        child.complete()
    own_server.start()
    assert ws.flush(60)
    back = Run.get(Workspace(own_server.uri), child.id)
    assert back.get_details()["displayName"] == "child" and back.get_details()["parentRunId"] == parent.id
    assert back.get_status() == "Completed" and back.get_metrics()["loss"] == 0.5
    assert sorted(r.get_tags().get("worker", "") for r in parent.get_children()) == ["", "a", "b"]
    assert Run.get(ws, workers[1].id).get_metrics()["loss"] == 2.0
    assert Run.get(ws, trial.id).get_details()["displayName"] == "trial-2"
    assert Run.get(ws, trial.id).get_metrics()["loss"] == 1.5
    assert parent.get_properties() == {"seed": "1", "lr": "0.1"}
    delivery = parent.get_details()["delivery"]
    assert delivery["rejected_entries"] == 0 and delivery["pending_points"] == 0


def _logging_through_an_outage(own_server, code: str, env: dict, outage: bool = True):
    """Starts ``code``, which prints its run's id and then waits for a line; stops the server (unless not
    ``outage``) and sends the line. Returns the process and the run's id."""
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    run_id = p.stdout.readline().strip()
    if outage:
        own_server.stop()
    p.stdin.write("\n")
    p.stdin.flush()
    return p, run_id


def _delivered_by_the_next_process(own_server, env: dict, run_id: str, left: str = ".journal") -> Run:
    """With a journal (or a crash log: ``left``) in the spool, starts the server again if it is stopped and a
    short-lived process for it: the next client for a server replays its journals on start, and its flush
    covers that replay. Returns the run, read back."""
    assert any(f.endswith(left) for f in os.listdir(env["FLIGHTLOG_SPOOL"]))
    if own_server.proc is None:
        own_server.start()
    replayer = subprocess.run(
        [sys.executable, "-c", f"import flightlog; ws = flightlog.Workspace({own_server.uri!r}); "
         "assert flightlog.Experiment(ws, 'other').start_logging().flush(60)"],
        env=env, timeout=120,
    )
    assert replayer.returncode == 0
    return Run.get(Workspace(own_server.uri), run_id)


def test_outage_at_complete_is_delivered_later(own_server, tmp_path):
    """Data logged while the server is down, then the process exits: the journal carries it to the next start."""
    png = tiny_png(str(tmp_path / "x.png"))
    code = f"""
import flightlog, os
ws = flightlog.Workspace({own_server.uri!r})
run = flightlog.Experiment(ws, "exit-outage").start_logging()
run.log("before", 1.0)
assert run.flush(30)
print(run.id, flush=True)
input()  # the test stops the server now
for i in range(1000):
    run.log("during", float(i), step=i)
run.log_image("img", path={png!r})
"""
    env = dict(os.environ, FLIGHTLOG_SPOOL=str(tmp_path / "spool"), FLIGHTLOG_EXIT_FLUSH_TIMEOUT="2")
    p, run_id = _logging_through_an_outage(own_server, code, env)
    assert p.wait(60) == 0
    run = _delivered_by_the_next_process(own_server, env, run_id)
    steps, values = _series(run, "during")
    assert steps == list(range(1000)) and values == [float(i) for i in range(1000)]
    img = run.get_metrics("img")["img"]
    assert img in run.get_file_names()  # images are journaled too


@pytest.mark.parametrize("outage", [False, True], ids=["server-up", "server-down"])
def test_sigkill_right_after_log_calls_loses_nothing(own_server, outage, tmp_path):
    """The OOM killer's case: a process killed the moment its log calls returned, nothing flushed. What the calls
    queued is in the client's crash log (a memory-mapped file: its pages outlive the process), and the next
    client for the server turns it into a journal and delivers it, every point once."""
    code = f"""
import flightlog, os, signal
ws = flightlog.Workspace({own_server.uri!r})
run = flightlog.Experiment(ws, "sigkill-now").start_logging()
run.log("first", 1.0)
assert run.flush(30)
print(run.id, flush=True)
input()  # the test stops the server now, or not
for i in range(30_000):
    run.log("x", float(i), step=i)
run.log_row("rows", i=7)
run.log("note", "last words")
os.kill(os.getpid(), signal.SIGKILL)
"""
    spool = tmp_path / "spool"
    env = dict(os.environ, FLIGHTLOG_SPOOL=str(spool))
    p, run_id = _logging_through_an_outage(own_server, code, env, outage)
    assert p.wait(60) == -signal.SIGKILL
    run = _delivered_by_the_next_process(own_server, env, run_id, left=".crashlog")
    steps, values = _series(run, "x")
    assert len(steps) == 30_000, f"{len(steps)} of 30000 points arrived"
    assert steps == list(range(30_000)) and values == [float(i) for i in range(30_000)]
    m = run.get_metrics()
    assert m["rows"] == {"i": [7]} and m["note"] == "last words"
    assert not any(f.endswith(".crashlog") for f in os.listdir(spool)), "recovered once, then removed"


def test_sigterm_to_the_main_process_journals_what_it_logged(own_server, tmp_path):
    """docker stop, Kubernetes and Slurm stop a training process with SIGTERM, whose default action skips
    every exit hook: what was logged and not yet sent was lost, and the run stayed Running. Now the process
    delivers or journals it with the run's end, then dies of the signal as before. A forked child's SIGTERM
    kills the child alone (it inherits the handler, but the thread behind it is its parent's)."""
    code = f"""
import flightlog, os, signal, time
ws = flightlog.Workspace({own_server.uri!r})
run = flightlog.Experiment(ws, "sigterm").start_logging()
assert run.flush(30)
print(run.id, flush=True)
input()  # the test stops the server now
for i in range(1000):
    run.log("during", float(i), step=i)
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
os.kill(child, signal.SIGTERM)
print(os.waitpid(child, 0)[1] == signal.SIGTERM, flush=True)
print("logged", flush=True)
time.sleep(60)
"""
    env = dict(os.environ, FLIGHTLOG_SPOOL=str(tmp_path / "spool"))
    p, run_id = _logging_through_an_outage(own_server, code, env)
    assert p.stdout.readline().strip() == "True", "the child died of its SIGTERM, the parent lives"
    assert p.stdout.readline().strip() == "logged"
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == -signal.SIGTERM
    run = _delivered_by_the_next_process(own_server, env, run_id)
    steps, values = _series(run, "during")
    assert steps == list(range(1000)) and values == [float(i) for i in range(1000)]
    # The run the stopped process started ends Canceled (MLflow's KILLED) instead of staying Running.
    assert run.get_status() == "Canceled"
    assert run.get_details()["error"]["code"] == "SIGTERM"


@pytest.mark.parametrize("mode", ["server", "local"])
def test_sigkill_after_flush_keeps_everything_flushed(mode, server, tmp_path):
    dest = f"flightlog.Workspace({server.uri!r})" if mode == "server" else f"flightlog.Workspace(data_dir={str(tmp_path / 'data')!r})"
    code = f"""
import flightlog, sys, time
ws = {dest}
run = flightlog.Experiment(ws, "sigkill").start_logging()
for i in range(50_000):
    run.log("x", float(i), step=i)
run.log_table("t", {{"a": list(range(1000))}})
assert run.flush(60)
print(run.id, flush=True)
i = 50_000
while True:  # keep logging until killed
    run.log("x", float(i), step=i)
    i += 1
    if i % 1000 == 0:
        time.sleep(0.001)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, FLIGHTLOG_SPOOL=str(tmp_path / "spool")))
    run_id = p.stdout.readline().strip()
    assert len(run_id) == 32, run_id
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    ws = Workspace(server.uri) if mode == "server" else Workspace(data_dir=str(tmp_path / "data"))
    run = Run.get(ws, run_id)
    steps, values = _series(run, "x")
    assert len(values) >= 50_000
    assert steps == list(range(len(values))), "points arrive in order, none twice"
    assert values[:50_000] == [float(i) for i in range(50_000)]
    assert run.get_metrics("t")["t"] == {"a": list(range(1000))}


@pytest.mark.parametrize("setting", ["2m", "500ms", "a while"])
def test_exit_flush_timeout_takes_units_and_a_bad_one_still_flushes(setting, server):
    code = f"""
import flightlog
run = flightlog.Experiment(flightlog.Workspace({server.uri!r}), "exit-timeout").start_logging()
for i in range(10_000):
    run.log("x", float(i), step=i)
print(run.id, flush=True)
"""
    r = run_script(code, env={"FLIGHTLOG_EXIT_FLUSH_TIMEOUT": setting})
    assert r.returncode == 0, r.stderr
    assert ("is not a duration" in r.stderr) == (setting == "a while"), r.stderr
    if setting != "500ms":  # half a second may end the flush early on a busy machine
        _, values = _series(Run.get(Workspace(server.uri), r.stdout.strip()), "x")
        assert values == [float(i) for i in range(10_000)]


@pytest.mark.parametrize("mode", ["server", "local"])
def test_interpreter_exit_delivers_everything(mode, server, tmp_path):
    dest = f"flightlog.Workspace({server.uri!r})" if mode == "server" else f"flightlog.Workspace(data_dir={str(tmp_path / 'data')!r})"
    code = f"""
import flightlog
ws = {dest}
run = flightlog.Experiment(ws, "atexit").start_logging()
for i in range(100_000):
    run.log("x", float(i), step=i)
run.log("s", "last words")
print(run.id, flush=True)
"""
    spool = tmp_path / "spool"
    r = run_script(code, env={"FLIGHTLOG_SPOOL": str(spool)})
    assert r.returncode == 0, r.stderr
    ws = Workspace(server.uri) if mode == "server" else Workspace(data_dir=str(tmp_path / "data"))
    run = Run.get(ws, r.stdout.strip())
    steps, values = _series(run, "x")
    assert values == [float(i) for i in range(100_000)]
    assert run.get_metrics("s") == {"s": "last words"}
    left = os.listdir(spool) if spool.exists() else []
    assert not left, f"a clean exit leaves nothing in the spool (no crash log, no journal): {left}"


def test_local_mode_several_processes_at_once(tmp_path, server):
    data = str(tmp_path / "shared-data")
    code = f"""
import flightlog, sys
ws = flightlog.Workspace(data_dir={data!r})
exp = flightlog.Experiment(ws, "parallel")
with exp.start_logging(display_name=sys.argv[1]) as run:
    for i in range(20_000):
        run.log("x", float(i), step=i)
        if i % 5000 == 0:
            run.flush()
    run.log_table("t", {{"a": list(range(100))}})
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, f"worker-{k}"], stderr=subprocess.PIPE, text=True) for k in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    ws = Workspace(data_dir=data)
    runs = Experiment(ws, "parallel").get_runs()
    assert sorted(r.display_name for r in runs) == ["worker-0", "worker-1", "worker-2"]
    for run in runs:
        assert run.get_status() == "Completed"
        steps, values = _series(run, "x")
        assert values == [float(i) for i in range(20_000)]
        assert run.get_metrics("t")["t"] == {"a": list(range(100))}
    # `flightlog server --data DIR` shows what local mode wrote.
    srv = Server(data).start()
    try:
        remote = Experiment(Workspace(srv.uri), "parallel").get_runs()
        assert sorted(r.id for r in remote) == sorted(r.id for r in runs)
        assert len(remote[0].get_metrics()["x"]) == 20_000
    finally:
        srv.stop()


def test_logging_never_raises_for_network_trouble(tmp_path):
    ws = Workspace("http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ConnectionError):
        Experiment(ws, "unreachable")  # control-plane calls do raise
    from flightlog.run import Run as R

    run = R._from_info(ws, {"id": "0" * 32, "experiment_id": "0", "status": "Running"}, fresh=True)
    t0 = time.perf_counter()
    for i in range(10_000):
        run.log("x", float(i))
    run.log_row("r", a=1)
    assert time.perf_counter() - t0 < 2
    assert run.flush(0.5) is False
