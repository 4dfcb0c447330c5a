"""Benchmark of the SDK's hot path: 1,000,000 `run.log(name, float, step=i)` calls.

Prints the median cost per call (median over chunks of 1,000 calls, so the clock is not inside the loop), the
time to deliver the whole million after `flush()` starts (to the real `flightlog server`, and in local mode),
`import flightlog` time, and a peer measured in the same run: tensorboardX `SummaryWriter.add_scalar`.

    .venv/bin/python python/bench/bench_log.py [--calls 1000000] [--peer-calls 20000] [--bin target/release/flightlog]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHUNK = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary: str, data: str) -> tuple:
    port = free_port()
    proc = subprocess.Popen([binary, "server", "--port", str(port), "--data", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(uri + "/health", timeout=1)
            return proc, uri
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def import_time_ms(repeats: int = 7) -> float:
    code = "import time; t = time.perf_counter(); import flightlog; print((time.perf_counter() - t) * 1000)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as users run it: with .pyc
    subprocess.check_output([sys.executable, "-c", code], text=True, env=env)  # writes the bytecode cache
    times = [float(subprocess.check_output([sys.executable, "-c", code], text=True, env=env)) for _ in range(repeats)]
    return statistics.median(times)


def time_chunks(fn, calls: int) -> list:
    """Per-call ns of each chunk of CHUNK calls of fn(i)."""
    per_call = []
    perf = time.perf_counter_ns
    for start in range(0, calls, CHUNK):
        t0 = perf()
        fn(start, min(start + CHUNK, calls))
        per_call.append((perf() - t0) / (min(start + CHUNK, calls) - start))
    return per_call


def bench_flightlog(ws, calls: int) -> dict:
    from flightlog import Experiment

    run = Experiment(ws, "bench").start_logging(display_name=f"bench {calls}")
    log = run.log

    def chunk(a: int, b: int) -> None:
        for i in range(a, b):
            log("loss", 0.5, step=i)

    t0 = time.perf_counter()
    per_call = time_chunks(chunk, calls)
    loop_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ok = run.flush(300)
    deliver_s = time.perf_counter() - t1
    steps, _times, values = ws._client.read_scalars(run.id, "loss")
    assert ok and len(values) == calls, f"{len(values)} of {calls} points stored"
    run.complete()
    return {
        "median_ns": statistics.median(per_call),
        "p99_ns": sorted(per_call)[int(len(per_call) * 0.99) - 1],
        "loop_s": loop_s,
        "deliver_after_flush_s": deliver_s,
        "total_s": loop_s + deliver_s,
    }


def bench_tensorboardx(calls: int, logdir: str) -> dict:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir)
    add = writer.add_scalar

    def chunk(a: int, b: int) -> None:
        for i in range(a, b):
            add("loss", 0.5, i)

    t0 = time.perf_counter()
    per_call = time_chunks(chunk, calls)
    loop_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    writer.close()
    return {"median_ns": statistics.median(per_call), "loop_s": loop_s, "deliver_after_flush_s": time.perf_counter() - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--peer-calls", type=int, default=20_000, help="tensorboardX calls (it is ~100x slower)")
    ap.add_argument("--bin", default=None, help="flightlog binary (default: target/release, else target/debug)")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()
    binary = args.bin or next(
        (p for p in (os.path.join(REPO, "target", d, "flightlog") for d in ("release", "debug")) if os.path.isfile(p)), None
    )
    if binary is None:
        raise SystemExit("build the server first: cargo build --release -p flightlog-cli")

    tmp = tempfile.mkdtemp(prefix="flightlog-bench-")
    os.environ["FLIGHTLOG_SPOOL"] = os.path.join(tmp, "spool")
    figures = {"import_ms": import_time_ms()}
    proc, uri = start_server(binary, os.path.join(tmp, "server-data"))
    try:
        from flightlog import Workspace

        figures["server"] = bench_flightlog(Workspace(uri), args.calls)
        figures["local"] = bench_flightlog(Workspace(data_dir=os.path.join(tmp, "local-data")), args.calls)
        try:
            figures["tensorboardX"] = bench_tensorboardx(args.peer_calls, os.path.join(tmp, "tb"))
        except ImportError:
            figures["tensorboardX"] = None
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    s, l, tb = figures["server"], figures["local"], figures["tensorboardX"]
    print(f"run.log(name, float, step=i) x {args.calls:,}  (server binary: {os.path.relpath(binary, REPO)})")
    print(f"  flightlog → server : median {s['median_ns']:8.0f} ns/call  p99 {s['p99_ns']:6.0f} ns   loop {s['loop_s']:.2f} s,"
          f" delivered {s['deliver_after_flush_s']:.2f} s after flush() started   (targets: ≤ 2000 ns, ≤ 2 s)")
    print(f"  flightlog → local  : median {l['median_ns']:8.0f} ns/call  p99 {l['p99_ns']:6.0f} ns   loop {l['loop_s']:.2f} s,"
          f" stored {l['deliver_after_flush_s']:.2f} s after flush() started")
    if tb:
        print(f"  tensorboardX add_scalar (same run, {args.peer_calls:,} calls): median {tb['median_ns']:8.0f} ns/call"
              f"  ({tb['median_ns'] / s['median_ns']:.0f}x flightlog), close() {tb['deliver_after_flush_s']:.2f} s")
    else:
        print("  tensorboardX not installed (pip install tensorboardX) — no peer figure")
    print(f"  import flightlog   : {figures['import_ms']:.1f} ms (median of 7 fresh interpreters; target ≤ 100 ms)")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
