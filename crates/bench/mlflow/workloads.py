#!/usr/bin/env python3
"""MLflow tracking REST workloads, timed against any server that speaks the API (MLflow's own or flightlog).

Stdlib only. Each scenario prints one JSON line with its figures:
  latency  sequential runs/log-metric calls, one point each (p50/p99 ms)
  ingest   N processes × runs × keys × steps, metrics in runs/log-batch requests of `batch` points (points/s,
           timed from the worker pool's start to the last acknowledged batch, run creation included)
  history  one 100k-point metric logged in 1,000-point batches, then read back whole with metrics/get-history
           the way the client does (max_results 25,000, following next_page_token) (median s of `repeat`)
  search   `runs` runs with 5 params, 5 metrics and a tag, then runs/search with a metric and a param filter
           ordered by a metric, paged by 1,000 (median s of `repeat`)
"""
import argparse
import http.client
import json
import multiprocessing
import random
import statistics
import sys
import time
import urllib.parse
import uuid


class Client:
    """One keep-alive connection; a dropped connection is reopened and the request resent (twice at most)."""

    def __init__(self, url):
        parts = urllib.parse.urlparse(url)
        self.host, self.port = parts.hostname, parts.port
        self.conn = self._connect()

    def _connect(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=600)

    def call(self, method, endpoint, body=None, query=None):
        path = "/api/2.0/mlflow/" + endpoint
        if query:
            path += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        for attempt in range(3):
            try:
                t = time.perf_counter()
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                # The server's share: request sent until the whole response is in, before the client parses it.
                self.last_transfer_s = time.perf_counter() - t
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = self._connect()
                if attempt == 2:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"{method} {path} -> {resp.status}: {raw[:300]!r}")
        return json.loads(raw) if raw else {}

    def new_experiment(self, prefix):
        return self.call("POST", "experiments/create", {"name": f"{prefix}-{uuid.uuid4().hex[:8]}"})["experiment_id"]

    def new_run(self, experiment_id, name="r"):
        body = {"experiment_id": experiment_id, "run_name": name, "start_time": int(time.time() * 1000)}
        return self.call("POST", "runs/create", body)["run"]["info"]["run_id"]


def latency(a):
    c = Client(a.url)
    run = c.new_run(c.new_experiment("latency"))
    took = []
    for step in range(a.calls):
        body = {"run_id": run, "key": "acc", "value": random.random(),
                "timestamp": int(time.time() * 1000), "step": step}
        t = time.perf_counter()
        c.call("POST", "runs/log-metric", body)
        took.append(time.perf_counter() - t)
    took.sort()
    return {"calls": a.calls, "p50_ms": round(took[len(took) // 2] * 1e3, 3),
            "p99_ms": round(took[int(len(took) * 0.99)] * 1e3, 3)}


def _ingest_worker(job):
    """Sends its points; returns them and the seconds spent waiting for log-batch answers."""
    url, experiment_id, runs, keys, steps, batch = job
    c = Client(url)
    sent, waited = 0, 0.0
    for _ in range(runs):
        run = c.new_run(experiment_id)
        t0 = int(time.time() * 1000)
        pending = []
        for step in range(steps):
            for k in range(keys):
                pending.append({"key": f"m{k}", "value": random.random(), "timestamp": t0 + step, "step": step})
                if len(pending) == batch:
                    c.call("POST", "runs/log-batch", {"run_id": run, "metrics": pending})
                    sent, waited = sent + len(pending), waited + c.last_transfer_s
                    pending = []
        if pending:
            c.call("POST", "runs/log-batch", {"run_id": run, "metrics": pending})
            sent, waited = sent + len(pending), waited + c.last_transfer_s
    return sent, waited


def ingest(a):
    experiment_id = Client(a.url).new_experiment("ingest")
    jobs = [(a.url, experiment_id, a.runs, a.keys, a.steps, a.batch)] * a.procs
    t = time.perf_counter()
    with multiprocessing.Pool(a.procs) as pool:
        done = pool.map(_ingest_worker, jobs)
    took = time.perf_counter() - t
    points = sum(n for n, _ in done)
    # Each worker's time blocked on log-batch answers (server + transfer), averaged over the workers.
    waited = statistics.mean(w for _, w in done)
    return {"points": points, "seconds": round(took, 3), "points_per_s": round(points / took),
            "waited_s": round(waited, 4)}


def history(a):
    c = Client(a.url)
    run = c.new_run(c.new_experiment("history"))
    t0 = int(time.time() * 1000)
    for first in range(0, a.points, 1000):
        metrics = [{"key": "loss", "value": 1.0 / (s + 1), "timestamp": t0 + s, "step": s}
                   for s in range(first, min(a.points, first + 1000))]
        c.call("POST", "runs/log-batch", {"run_id": run, "metrics": metrics})
    took, served, client = [], [], []
    for _ in range(a.repeat):
        t = time.perf_counter()
        got, token, transfer = 0, None, 0.0
        while True:
            query = {"run_id": run, "metric_key": "loss", "max_results": 25000}
            if token:
                query["page_token"] = token
            page = c.call("GET", "metrics/get-history", query=query)
            transfer += c.last_transfer_s
            got += len(page.get("metrics", []))
            token = page.get("next_page_token")
            if not token:
                break
        took.append(time.perf_counter() - t)
        served.append(transfer)
        client.append(took[-1] - transfer)
        if got != a.points:
            raise RuntimeError(f"get-history returned {got} points, expected {a.points}")
    median = statistics.median(took)
    return {"points": a.points, "median_s": round(median, 4), "points_per_s": round(a.points / median),
            "served_median_s": round(statistics.median(served), 4),
            # The client's own share (parsing the pages): the time the loop would take against a server that
            # answered in no time at all, since the loop waits for each page before it asks for the next.
            "client_median_s": round(statistics.median(client), 4)}


def search(a):
    c = Client(a.url)
    experiment_id = c.new_experiment("search")
    for i in range(a.runs):
        run = c.new_run(experiment_id, f"run{i}")
        c.call("POST", "runs/log-batch", {
            "run_id": run,
            "params": [{"key": f"p{j}", "value": random.choice("abc")} for j in range(5)],
            "metrics": [{"key": f"m{j}", "value": random.random(), "timestamp": 0, "step": 0} for j in range(5)],
            "tags": [{"key": "team", "value": random.choice(["x", "y"])}],
        })
    took, matched = [], 0
    for _ in range(a.repeat):
        t = time.perf_counter()
        matched, token = 0, None
        while True:
            body = {"experiment_ids": [experiment_id], "filter": "metrics.m0 > 0.5 and params.p0 = 'a'",
                    "order_by": ["metrics.m1 DESC"], "max_results": 1000}
            if token:
                body["page_token"] = token
            page = c.call("POST", "runs/search", body)
            matched += len(page.get("runs", []))
            token = page.get("next_page_token")
            if not token:
                break
        took.append(time.perf_counter() - t)
    return {"runs": a.runs, "matched": matched, "median_s": round(statistics.median(took), 4)}


SCENARIOS = {"latency": latency, "ingest": ingest, "history": history, "search": search}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=None, help="ingest: runs per process (2); search: runs (500)")
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--points", type=int, default=100000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if a.runs is None:
        a.runs = 500 if a.scenario == "search" else 2
    out = SCENARIOS[a.scenario](a)
    print(json.dumps({"scenario": a.scenario, **out}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
