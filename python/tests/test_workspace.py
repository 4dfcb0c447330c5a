"""Workspace resolution, Run.get_context, the import contract (fast, no heavy imports), typing files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_script

import flightlog
from flightlog import Experiment, Run, Workspace
from flightlog.errors import FlightlogError

PKG = os.path.dirname(flightlog.__file__)


def test_explicit_uri_and_local(tmp_path, server):
    ws = Workspace(server.uri + "/")
    assert ws.uri == server.uri and not ws.is_local and ws.data_dir is None
    assert ws.get_mlflow_tracking_uri() == server.uri
    local = Workspace(f"file://{tmp_path}/d")
    assert local.is_local and local.data_dir == f"{tmp_path}/d" and local.uri is None
    with pytest.raises(FlightlogError, match="flightlog server --data"):
        local.get_mlflow_tracking_uri()
    with pytest.raises(ValueError):
        Workspace("ftp://nope")


def test_resolution_order(tmp_path, server, monkeypatch):
    project = tmp_path / "project"
    deep = project / "src" / "deeper"
    deep.mkdir(parents=True)
    (project / ".flightlog").mkdir()
    (project / ".flightlog" / "config.json").write_text(json.dumps({"tracking_uri": server.uri}))
    monkeypatch.chdir(deep)
    monkeypatch.delenv("FLIGHTLOG_TRACKING_URI", raising=False)
    assert Workspace().uri == server.uri  # config found upward
    assert Workspace.from_config().uri == server.uri
    assert Workspace.from_config(str(project)).uri == server.uri
    assert Workspace.from_config(str(project / ".flightlog" / "config.json")).uri == server.uri
    monkeypatch.setenv("FLIGHTLOG_TRACKING_URI", "http://127.0.0.1:1")
    assert Workspace().uri == "http://127.0.0.1:1"  # the environment beats the config
    assert Workspace("http://127.0.0.1:2").uri == "http://127.0.0.1:2"  # the argument beats both
    monkeypatch.delenv("FLIGHTLOG_TRACKING_URI")
    (project / ".flightlog" / "config.json").write_text(json.dumps({"data_dir": "runs"}))
    ws = Workspace()
    assert ws.is_local and ws.data_dir == str(project / "runs")


def test_local_mode_default_dirs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLIGHTLOG_TRACKING_URI", raising=False)
    monkeypatch.delenv("FLIGHTLOG_DATA", raising=False)
    ws = Workspace()
    assert ws.is_local and ws.data_dir == str(tmp_path / "flightlog-data")
    monkeypatch.setenv("FLIGHTLOG_DATA", str(tmp_path / "elsewhere"))
    assert Workspace().data_dir == str(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        Workspace.from_config()


def test_get_context_inside_a_tracked_run(server):
    ws = Workspace(server.uri)
    parent = Experiment(ws, "context").start_logging(display_name="launched")
    code = """
from flightlog import Run
run = Run.get_context()
assert Run.get_context() is run
run.log("from_script", 42.0)
run.flush()
print(run.id)
"""
    r = run_script(code, env={"FLIGHTLOG_RUN_ID": parent.id, "FLIGHTLOG_TRACKING_URI": server.uri})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == parent.id
    assert parent.get_metrics() == {"from_script": 42.0}
    assert parent.get_status() == "Running"  # the launcher owns the status


def test_get_context_offline_records_into_local_mode(tmp_path):
    code = """
from flightlog import Run
run = Run.get_context()
run.log("offline_metric", 1.5)
print(run.id)
"""
    env = {"FLIGHTLOG_DATA": str(tmp_path / "data")}
    env_clear = {k: "" for k in ("FLIGHTLOG_RUN_ID", "FLIGHTLOG_TRACKING_URI")}
    r = run_script(code, env={**env, **env_clear}, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    run = Run.get(Workspace(data_dir=str(tmp_path / "data")), r.stdout.strip())
    assert run.get_metrics() == {"offline_metric": 1.5}
    assert run.get_status() == "Completed"  # completed at interpreter exit
    assert run.experiment.name == "Default"


def test_import_is_light_and_fast():
    code = (
        "import sys, time; t = time.perf_counter(); import flightlog; dt = time.perf_counter() - t;"
        "heavy = [m for m in ('numpy', 'matplotlib', 'logging', 'typing') if m in sys.modules];"
        "print(dt, ','.join(heavy))"
    )
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as users run it: with .pyc
    best = None
    for _ in range(4):
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        dt, heavy = r.stdout.split()[0], r.stdout.split()[1:]
        assert not heavy, f"import flightlog imported {heavy}"
        best = min(best or 1e9, float(dt))
    assert best < 0.5, f"import flightlog took {best * 1000:.0f} ms"  # ≤ 100 ms on an idle machine; see the bench


def test_typing_files_and_docstrings():
    assert os.path.isfile(os.path.join(PKG, "py.typed"))
    assert os.path.isfile(os.path.join(PKG, "_native.pyi"))
    for obj in (flightlog, Workspace, Experiment, Run, flightlog.errors):
        assert obj.__doc__
    for cls in (Workspace, Experiment, Run):
        for name, member in vars(cls).items():
            if name.startswith("_") and name not in ("__init__", "_repr_html_"):
                continue
            target = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            if callable(target) or isinstance(member, property):
                assert target.__doc__ or name == "__init__", f"{cls.__name__}.{name} has no docstring"
    for name in flightlog.errors.__all__:
        assert getattr(flightlog.errors, name).__doc__, name


def test_native_stub_matches_the_module():
    import ast

    from flightlog import _native

    tree = ast.parse(open(os.path.join(PKG, "_native.pyi"), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(_native, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name != "__init__":
                    assert hasattr(cls, item.name), f"{node.name}.{item.name} is in the stub but not the module"
            names = {i.name for i in node.body if isinstance(i, ast.FunctionDef)}
            public = {n for n in dir(cls) if not n.startswith("_")}
            assert public <= names, f"{node.name}: {public - names} missing from the stub"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("mode", ["local", "server"])
def test_forked_children_exit_promptly_and_can_log(tmp_path, server, mode):
    """Forks while a thread of the parent keeps logging into (and reading from) a run. Each child opens the
    same destination again (in local mode: the same data folder) and logs into the run both through the Run
    object it inherited and through a fresh handle; nothing it logs may be lost, and it must exit at once (its atexit flush must not
    wait on the parent's sender). Before the store held SQLite still across fork, a child could inherit a
    write lock "held in this process" and fail with `database is locked`, or crash in a notify that followed
    parking_lot's inherited table of parked threads (in server mode too)."""
    dest = f"data_dir={str(tmp_path / 'data')!r}" if mode == "local" else repr(server.uri)
    code = f"""
import os, sys, threading, time
import flightlog
ws = flightlog.Workspace({dest})
run = flightlog.Experiment(ws, "fork").start_logging()
run.log("parent", 1.0)
stop = threading.Event()
def busy():
    i = 0
    while not stop.is_set():
        run.log("busy", float(i))
        i += 1
        if i % 500 == 0:
            run.flush()
            run.get_metrics("busy")
logger = threading.Thread(target=busy)
logger.start()
for k in range(8):
    time.sleep(0.01)
    pid = os.fork()
    if pid == 0:
        run.log("inherited", float(k), step=k)
        child_ws = flightlog.Workspace({dest})
        flightlog.Run.get(child_ws, run.id).log("fresh", float(k), step=k)
        sys.exit(0)  # atexit runs here: must not hang on the parent's client
    t = time.time()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and time.time() - t < 20, (k, status, time.time() - t)
stop.set()
logger.join()
run.flush()
print(run.id)
"""
    r = run_script(code, timeout=60)
    assert r.returncode == 0, r.stderr
    ws = Workspace(data_dir=str(tmp_path / "data")) if mode == "local" else Workspace(server.uri)
    run = Run.get(ws, r.stdout.strip())
    for name in ("inherited", "fresh"):
        assert run.get_metrics(name)[name] == [float(k) for k in range(8)], name
    assert run.get_metrics("parent") == {"parent": 1.0}


def test_workspaces_experiments_and_runs_go_to_spawned_processes(tmp_path, server):
    """The spawn start method (torch.multiprocessing.spawn, DataLoader workers on macOS, joblib, Ray) pickles
    what it passes: a Run could not be, so no worker could log into it. Each worker logs through a client of
    its own; the run stays the parent's to end."""
    script = tmp_path / "spawned.py"
    script.write_text(f"""
import multiprocessing as mp, pickle
import flightlog

def work(run, exp, k):
    run.log("spawned", float(k), step=k)
    assert run.experiment == exp and run.workspace == exp.workspace
    assert run.flush(60)
    return run.get_status()

if __name__ == "__main__":
    ws = flightlog.Workspace({server.uri!r})
    exp = flightlog.Experiment(ws, "spawned")
    run = exp.start_logging()
    assert pickle.loads(pickle.dumps(ws)) == ws
    with mp.get_context("spawn").Pool(2) as pool:
        print(pool.starmap(work, [(run, exp, k) for k in range(4)]))
    print(run.get_status(), sorted(run.get_metrics()["spawned"]))  # two workers: arrival order varies
""")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["['Running', 'Running', 'Running', 'Running']",
                                     "Running [0.0, 1.0, 2.0, 3.0]"], r.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_childs_exit_leaves_the_run_to_the_parent(tmp_path, server):
    """A child forked inside a with block whose sys.exit passes through the block, and a child of a script
    whose offline context run ended at the child's exit (the inherited atexit hook), each ended the parent's
    run while the parent went on."""
    code = f"""
import os, sys
import flightlog
ws = flightlog.Workspace({server.uri!r})
parent = os.getpid()
try:
    with flightlog.Experiment(ws, "fork-with").start_logging() as run:
        if os.fork() == 0:
            run.log("child", 1.0)
            sys.exit(0)
        os.wait()
        print(run.get_status())
        run.log("parent", 2.0)
except SystemExit:
    if os.getpid() != parent:
        run.flush(30)
        os._exit(0)
    raise
print(run.get_status(), sorted(run.get_metrics().items()))
context = flightlog.Run.get_context()
if os.fork() == 0:
    sys.exit(0)
os.wait()
print(context.get_status())
"""
    env = {"FLIGHTLOG_TRACKING_URI": "", "FLIGHTLOG_RUN_ID": "", "FLIGHTLOG_DATA": str(tmp_path / "data")}
    r = run_script(code, cwd=str(tmp_path), env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "Running",
        "Completed [('child', 1.0), ('parent', 2.0)]",
        "Running",
    ], r.stdout


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread signal masks from /proc")
@pytest.mark.parametrize("mode", ["local", "server"])
def test_the_sdks_threads_leave_signals_to_the_programs_threads(tmp_path, server, mode):
    """A signal sent to the process goes to any thread that does not block it. One that landed on a flightlog
    thread was only noted for Python's main thread, which, waiting in C (a Pool worker on its queue's lock at
    `with Pool()`'s SIGTERM), never looked: the worker hung (1 run in 80 under load). Every thread the SDK
    starts must block SIGTERM and SIGINT; the main thread must not."""
    dest = f"data_dir={str(tmp_path / 'data')!r}" if mode == "local" else repr(server.uri)
    code = f"""
import json, os, threading
import flightlog
run = flightlog.Experiment(flightlog.Workspace({dest}), "signals").start_logging()
run.log("x", 1.0)
run.flush()
masks = {{}}
for tid in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{{tid}}/comm") as f:
        name = f.read().strip()
    with open(f"/proc/self/task/{{tid}}/status") as f:
        blocked = int(next(l for l in f if l.startswith("SigBlk:")).split()[1], 16)
    key = "main" if int(tid) == threading.get_native_id() else name
    masks[key] = [bool(blocked >> (s - 1) & 1) for s in (15, 2)]
print(json.dumps(masks))
"""
    r = run_script(code)
    assert r.returncode == 0, r.stderr
    masks = json.loads(r.stdout.strip().splitlines()[-1])
    ours = {name: m for name, m in masks.items() if name.startswith("flightlog-")}
    expected = {"flightlog-sende"} | ({"flightlog-write", "flightlog-sync"} if mode == "local" else set())
    assert expected <= set(ours), masks
    assert all(m == [True, True] for m in ours.values()), masks
    assert masks["main"] == [False, False]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("mode", ["local", "server"])
def test_multiprocessing_children_deliver_what_they_log(tmp_path, server, mode):
    """multiprocessing children end with os._exit, which skips atexit, and `with Pool()` ends its workers with
    SIGTERM: before the SDK flushed from multiprocessing's finalizers and on SIGTERM, every point these children
    logged into the inherited run was lost (the run read back empty)."""
    dest = f"data_dir={str(tmp_path / 'data')!r}" if mode == "local" else repr(server.uri)
    code = f"""
import multiprocessing as mp
import flightlog
run = flightlog.Experiment(flightlog.Workspace({dest}), "mp").start_logging()
def work(k):
    run.log("worker", float(k), step=k)
if __name__ == "__main__":
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=work, args=(k,)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 4
    with ctx.Pool(2) as pool:  # leaving the block terminates the workers
        pool.map(work, range(4, 8))
    print(run.id)
"""
    r = run_script(code, timeout=60)
    assert r.returncode == 0, r.stderr
    ws = Workspace(data_dir=str(tmp_path / "data")) if mode == "local" else Workspace(server.uri)
    run = Run.get(ws, r.stdout.strip())
    assert sorted(run.get_metrics("worker")["worker"]) == [float(k) for k in range(8)]
