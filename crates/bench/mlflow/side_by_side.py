#!/usr/bin/env python3
"""Runs the MLflow REST workloads (workloads.py) against MLflow's own tracking server and flightlog in one run and
prints each figure for both, the ratio, and the target.

Both servers start on free loopback ports with fresh temp data directories: MLflow with its SQLite backend and
proxied artifacts (`mlflow server --backend-store-uri sqlite:///... --artifacts-destination ...`), flightlog as
`flightlog server`. After the scenarios, the resident memory of each server's process group and the size of its
data directory are compared. With --rounds N every scenario runs N times per server and medians are compared.

Under the ingest and history figures a "ceiling" row shows the best ratio any server could reach with this client
on this machine, so a missed target can be told apart from one no server can meet here:
  ingest   the same workload against `mlflow-noop`, a server that reads each request and answers at once (the
           workers build and encode their batches in Python on the cores the server shares)
  history  the loop's own time with the waits for answers taken out (it parses each page before asking for the
           next, so that is what it would take against a server that answered in no time)
Under the latency figure, whose points come one per request, "disk per point" is the growth of each server's data
directory over that scenario divided by its points: logging one point per step is the most common way, and the
final disk figure, dominated by batched points, would hide a per-request cost. Files grow by whole pages (4 KB),
so over 1,000 points a figure is good to about 4 bytes either way.
Run through scripts/mlflow-bench, which provides the pinned MLflow and the release binaries.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

WORKLOADS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workloads.py")

# scenario: (workload arguments, figure, better, target ratio, label)
SCENARIOS = {
    "latency": (["--calls", "1000"], "p50_ms", "lower", 30, "single log-metric p50 (ms)"),
    "ingest": (["--runs", "2", "--keys", "10", "--steps", "1000", "--procs", "2"], "points_per_s", "higher", 50,
               "log-batch ingest (points/s)"),
    "history": (["--points", "100000", "--repeat", "3"], "median_s", "lower", 50, "100k-point get-history (s)"),
    "search": (["--runs", "500", "--repeat", "3"], "median_s", "lower", 10, "runs/search over 500 runs (s)"),
}
# Further figures a scenario reports, shown under its main one: (figure, better, label). Not targets: they show
# the servers' share where the client's own work is most of flightlog's time — the history loop's JSON parsing
# (Python's json.loads of 8.5 MB) and the ingest workers building and encoding their batches.
EXTRA = {
    "ingest": [("waited_s", "lower", "  ...each worker waiting on answers (s)")],
    "history": [("served_median_s", "lower", "  ...responses in, before parsing (s)")],
}
# Scenarios whose points come one per request, with the workload figure that counts them: the growth of each
# server's data directory over the scenario, per point, is shown under it ("disk per point" for the most common
# way of logging, one `log_metric` per step, which the final disk figure's mix of batches hides).
ONE_POINT_PER_REQUEST = {"latency": "calls"}
# scenario: (where the ceiling figure comes from, figure); see the module's doc.
CEILING = {
    "ingest": ("noop", "points_per_s"),
    "history": ("flightlog", "client_median_s"),
}
CEILING_LABEL = "  ...ceiling for any server here"
DISK_PER_POINT_LABEL = "  ...disk per point (bytes)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, port, log):
    """Starts a server in its own process group and waits until experiment 0 answers."""
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited early (see {log.name}): {' '.join(argv)}")
        try:
            with urllib.request.urlopen(url + "/api/2.0/mlflow/experiments/get?experiment_id=0", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    stop(proc)
    sys.exit(f"server did not answer within 120 s (see {log.name}): {' '.join(argv)}")


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def rss_mb(proc):
    """Resident memory of every process in the server's process group (MLflow runs several workers)."""
    pgid = os.getpgid(proc.pid)
    total_kb = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            with open(f"/proc/{pid}/status") as f:
                total_kb += sum(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, ValueError):
            pass
    return total_kb / 1024


def disk_mb(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 2**20


def workload(url, scenario, args):
    out = subprocess.run([sys.executable, WORKLOADS, "--url", url, scenario, *args], capture_output=True, text=True)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio(mlflow, ours, better):
    if not mlflow or not ours:
        return None
    return ours / mlflow if better == "higher" else mlflow / ours


def median_of(runs, figure):
    values = [r[figure] for r in runs if figure in r]
    return statistics.median(values) if values else None


def row(label, mlflow, ours, r, target, fmt="{:.4g}", ceiling=None):
    """One figure for both servers; `target` None: shown for information, no verdict. A missed target whose
    `ceiling` ratio is below it too is marked as out of reach for any server on this machine."""
    shown = lambda v: "error" if v is None else fmt.format(v)
    r_text = "-" if r is None else f"{r:.1f}x"
    if target is None:
        print(f"{label:34} {shown(mlflow):>12} {shown(ours):>12} {r_text:>9}", flush=True)
        return
    verdict = "" if r is None else ("met" if r >= target else "MISSED")
    if verdict == "MISSED" and ceiling is not None and ceiling < target:
        verdict += f" (no server can reach it here: ceiling {ceiling:.1f}x)"
    print(f"{label:34} {shown(mlflow):>12} {shown(ours):>12} {r_text:>9}   >= {target}x  {verdict}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlflow", required=True, help="the mlflow executable (pinned version)")
    ap.add_argument("--flightlog", required=True, help="the flightlog binary (release build)")
    ap.add_argument("--noop", required=True, help="the mlflow-noop binary (release build), for the ceilings")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    ap.add_argument("--rounds", type=int, default=1, help="runs per scenario and server; medians are compared")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per figure")
    a = ap.parse_args()
    names = [n for n in a.scenarios.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    root = tempfile.mkdtemp(prefix="flightlog-mlflow-bench-")
    servers, noop = {}, None
    try:
        for name in ("mlflow", "flightlog"):
            os.makedirs(os.path.join(root, name, "data"))
        log = lambda n: open(os.path.join(root, n, "server.log"), "wb")
        data = {n: os.path.join(root, n, "data") for n in ("mlflow", "flightlog")}
        port = free_port()
        servers["mlflow"] = start([a.mlflow, "server", "--backend-store-uri", f"sqlite:///{data['mlflow']}/db.sqlite",
                                   "--artifacts-destination", f"{data['mlflow']}/artifacts",
                                   "--host", "127.0.0.1", "--port", str(port)], port, log("mlflow"))
        port = free_port()
        servers["flightlog"] = start([a.flightlog, "server", "--port", str(port), "--data", data["flightlog"]],
                                     port, log("flightlog"))
        os.makedirs(os.path.join(root, "noop"))
        port = free_port()
        noop = start([a.noop, str(port)], port, log("noop"))
        print(f"{'figure':34} {'MLflow':>12} {'flightlog':>12} {'advantage':>9}   target", flush=True)
        results = []
        for name in names:
            args, figure, better, target, label = SCENARIOS[name]
            got = {s: [] for s in servers}
            ceiling_source, ceiling_figure = CEILING.get(name, (None, None))
            if ceiling_source == "noop":
                got["noop"] = []
            per_point = ONE_POINT_PER_REQUEST.get(name)
            before = {s: disk_mb(data[s]) for s in servers} if per_point else None
            for _ in range(a.rounds):
                for s, (_, url) in servers.items():
                    got[s].append(workload(url, name, args))
                if ceiling_source == "noop":
                    got["noop"].append(workload(noop[1], name, args))
            med = {}
            for s, runs in got.items():
                med[s] = median_of(runs, figure)
                for r in runs:
                    if "error" in r:
                        print(f"  {s} {name}: {r['error']}", file=sys.stderr)
            r = ratio(med["mlflow"], med["flightlog"], better)
            best = median_of(got[ceiling_source], ceiling_figure) if ceiling_source else None
            ceiling = ratio(med["mlflow"], best, better)
            row(label, med["mlflow"], med["flightlog"], r, target, ceiling=ceiling)
            for extra, extra_better, extra_label in EXTRA.get(name, []):
                m = {s: median_of(runs, extra) for s, runs in got.items()}
                row(extra_label, m["mlflow"], m["flightlog"], ratio(m["mlflow"], m["flightlog"], extra_better), None)
            if ceiling_source:
                row(CEILING_LABEL, med["mlflow"], best, ceiling, None)
            if per_point:
                time.sleep(1)  # let both servers settle their write-ahead logs
                points = {s: sum(r.get(per_point, 0) for r in got[s]) for s in servers}
                per = {s: (disk_mb(data[s]) - before[s]) * 2**20 / points[s] if points[s] else None for s in servers}
                row(DISK_PER_POINT_LABEL, per["mlflow"], per["flightlog"],
                    ratio(per["mlflow"], per["flightlog"], "lower"), 10, "{:.1f}")
                results.append({"scenario": name, "figure": "disk_bytes_per_point", **per, "target": 10})
            results.append({"scenario": name, "figure": figure, "mlflow": med["mlflow"],
                            "flightlog": med["flightlog"], "advantage": r, "target": target, "ceiling": ceiling,
                            "runs": got})
        mem = {s: rss_mb(p) for s, (p, _) in servers.items()}
        row("server memory, RSS (MB)", mem["mlflow"], mem["flightlog"], ratio(mem["mlflow"], mem["flightlog"], "lower"), 5,
            "{:.1f}")
        results.append({"figure": "rss_mb", **mem, "target": 5})
        time.sleep(1)  # as for disk per point: both servers' write-ahead logs settle into their databases
        disk = {s: disk_mb(data[s]) for s in servers}
        row("data on disk (MB)", disk["mlflow"], disk["flightlog"], ratio(disk["mlflow"], disk["flightlog"], "lower"), 10,
            "{:.2f}")
        results.append({"figure": "disk_mb", **disk, "target": 10})
        if a.json:
            for r in results:
                print(json.dumps(r))
    finally:
        for proc, _ in list(servers.values()) + ([noop] if noop else []):
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
