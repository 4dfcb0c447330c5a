"""The same bad requests sent to MLflow's own server (3.17.2, SQLite backend) and to flightlog: the HTTP status
and `error_code` must agree."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import requests

from conftest import _free_port

# Where flightlog deliberately differs: it names unknown endpoints with ENDPOINT_NOT_FOUND (MLflow answers an
# HTML 404), and rejects an unknown run status with a 400 (MLflow silently ignores it).
CASES = [
    ("GET", "experiments/get-by-name", {"params": {"experiment_name": "missing-xyz"}}),
    ("GET", "experiments/get", {"params": {"experiment_id": "987654"}}),
    ("GET", "experiments/get", {"params": {"experiment_id": "abc"}}),
    ("POST", "experiments/create", {"json": {"name": "{exp_name}"}}),
    ("POST", "experiments/create", {"json": {}}),
    ("POST", "experiments/create", {"json": {"name": ""}}),
    ("POST", "experiments/delete", {"json": {"experiment_id": "987654"}}),
    ("POST", "experiments/delete", {"json": {"experiment_id": "{gone_eid}"}}),
    ("POST", "experiments/restore", {"json": {"experiment_id": "{eid}"}}),
    ("POST", "experiments/set-experiment-tag", {"json": {"experiment_id": "{gone_eid}", "key": "t", "value": "v"}}),
    ("POST", "experiments/delete-experiment-tag", {"json": {"experiment_id": "{gone_eid}", "key": "t"}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{orphan}", "key": "m", "value": 1, "timestamp": 1}}),
    ("POST", "runs/set-tag", {"json": {"run_id": "{orphan}", "key": "t", "value": "1"}}),
    ("POST", "experiments/search", {"json": {"max_results": 50001}}),
    ("POST", "experiments/search", {"json": {"max_results": 10, "filter": "name = 'a' OR name = 'b'"}}),
    ("GET", "runs/get", {"params": {"run_id": "0" * 32}}),
    ("GET", "runs/get", {"params": {"run_id": "nope"}}),
    ("GET", "runs/get", {"params": {}}),
    ("POST", "runs/log-parameter", {"json": {"run_id": "{run}", "key": "p", "value": "2"}}),
    ("POST", "runs/log-parameter", {"json": {"run_id": "{run}", "key": "p", "value": "1"}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "bad!", "value": 1, "timestamp": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "m", "value": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "m", "timestamp": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{dead}", "key": "m", "value": 1, "timestamp": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "0" * 32, "key": "m", "value": 1, "timestamp": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "m", "value": "NaN", "timestamp": 1}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "m", "value": 1, "timestamp": -1}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "metrics": [
        {"key": "m", "value": 1, "timestamp": -5, "step": 0}]}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "m", "value": 1, "timestamp": 1,
                                          "model_id": "m-doesnotexist"}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "metrics": [
        {"key": "m", "value": 1, "timestamp": 1, "step": i} for i in range(1001)]}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "params": [
        {"key": "d", "value": "1"}, {"key": "d", "value": "1"}]}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "params": [
        {"key": f"q{i}", "value": "1"} for i in range(101)]}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{dead}", "tags": [{"key": "t", "value": "1"}]}}),
    ("POST", "runs/set-tag", {"json": {"run_id": "{dead}", "key": "t", "value": "1"}}),
    ("POST", "runs/delete", {"json": {"run_id": "{dead}"}}),
    ("POST", "runs/restore", {"json": {"run_id": "{run}"}}),
    ("POST", "runs/delete", {"json": {"run_id": "0" * 32}}),
    ("POST", "runs/create", {"json": {"experiment_id": "{eid}", "run_name": "a",
                                      "tags": [{"key": "mlflow.runName", "value": "b"}]}}),
    ("POST", "runs/create", {"json": {"experiment_id": "987654"}}),
    ("POST", "runs/update", {"json": {"run_id": "{dead}", "status": "FINISHED"}}),
    ("POST", "runs/log-inputs", {"json": {"run_id": "{run}", "datasets": [{"dataset": {"name": "d"}}]}}),
    ("POST", "runs/log-inputs", {"json": {"run_id": "{run}", "datasets": [{"dataset": {
        "name": "n" * 501, "digest": "d", "source_type": "local", "source": "s"}}]}}),
    ("POST", "runs/log-inputs", {"json": {"run_id": "{run}", "datasets": [{"dataset": {
        "name": "n", "digest": "d" * 37, "source_type": "local", "source": "s"}}]}}),
    ("POST", "runs/log-inputs", {"json": {"run_id": "{run}", "datasets": [{"dataset": {
        "name": "n", "digest": "d", "source_type": "local", "source": "s"},
        "tags": [{"key": "mlflow.data.context", "value": "v" * 501}]}]}}),
    ("POST", "experiments/set-experiment-tag", {"json": {"experiment_id": "{eid}", "key": "bad!", "value": "v"}}),
    ("POST", "experiments/update", {"json": {"experiment_id": "{eid}"}}),
    ("POST", "runs/delete-tag", {"json": {"run_id": "{run}", "key": "nope"}}),
    ("POST", "runs/delete-tag", {"json": {"run_id": "{run}", "key": "mlflow.runName"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "metrics.a > 1 OR params.b = 'x'"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "metrics.a = 'x'"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "foo.a = 'x'"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "params.a > 'x'"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "max_results": 50001}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "order_by": ["metrics.a SIDEWAYS"]}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "page_token": "garbage"}}),
    ("POST", "runs/search", {"json": {"experiment_ids": [], "max_results": 5}}),
    ("GET", "metrics/get-history", {"params": {"run_id": "0" * 32, "metric_key": "m"}}),
    ("GET", "metrics/get-history", {"params": {"run_id": "{run}", "metric_key": "nothing"}}),
    ("GET", "metrics/get-history-bulk-interval", {"params": {"run_ids": ["{run}"] * 101, "metric_key": "m"}}),
    ("GET", "metrics/get-history-bulk-interval", {"params": {"run_ids": ["{run}"], "metric_key": "m",
                                                             "max_results": 3000}}),
    ("POST", "logged-models/search", {"json": {"experiment_ids": ["{eid}"], "datasets": [{"dataset_digest": "x"}]}}),
    ("POST", "logged-models/search", {"json": {"experiment_ids": ["{eid}"], "filter": "tags.t IS NULL"}}),
    ("DELETE", "logged-models/{model}/tags/nope", {}),
    ("POST", "logged-models", {"json": {"experiment_id": "{eid}", "name": "bad/name"}}),
    ("POST", "logged-models", {"json": {"experiment_id": "{eid}", "name": "v1.2"}}),
    ("PATCH", "logged-models/{model}", {"json": {"model_id": "{model}", "status": 2}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "m", "value": 1, "timestamp": 1,
                                          "dataset_name": "ds"}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "metrics": [
        {"key": "m", "value": 1, "timestamp": 1, "step": 0, "dataset_digest": "d"}]}}),
    ("POST", "logged-models/search", {"json": {"experiment_ids": ["{eid}"], "filter": "params.p IN ('a', 'b')"}}),
    # Accepted by both: enums by number (protobuf's JSON form), a trailing comma in an IN list.
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "run_view_type": 3}}),
    ("POST", "experiments/search", {"json": {"max_results": 5, "view_type": 2}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "attributes.run_id IN ('{run}',)"}}),
    ("POST", "runs/update", {"json": {"run_id": "{run}", "status": 3, "end_time": 5}}),
    # An empty required text is a missing one; blanks are no filter; an unknown view is ACTIVE_ONLY; a run that
    # does not exist is skipped by a chart's bulk read; a negative experiment id names no experiment.
    ("GET", "experiments/get-by-name", {"params": {"experiment_name": ""}}),
    ("POST", "runs/delete-tag", {"json": {"run_id": "{run}", "key": ""}}),
    ("POST", "experiments/delete-experiment-tag", {"json": {"experiment_id": "{eid}", "key": ""}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "filter": "   "}}),
    ("POST", "runs/search", {"json": {"experiment_ids": ["{eid}"], "run_view_type": "BOGUS"}}),
    ("GET", "experiments/search", {"params": {"max_results": 5, "view_type": "all"}}),
    ("GET", "metrics/get-history-bulk-interval", {"params": {"run_ids": ["0" * 32, "{run}"], "metric_key": "m"}}),
    ("GET", "experiments/get", {"params": {"experiment_id": "-1"}}),
    ("POST", "experiments/create", {"json": {"name": "{exp_name}-loc", "artifact_location": "http://example.com/x"}}),
    ("POST", "experiments/create", {"json": {"name": "{exp_name}-frag", "artifact_location": "s3://b/p#f"}}),
    ("POST", "experiments/create", {"json": {"name": "{exp_name} "}}),
    # A value left out or null is "" (proto3 has no absent string).
    ("POST", "runs/log-parameter", {"json": {"run_id": "{run}", "key": "no-value"}}),
    ("POST", "runs/set-tag", {"json": {"run_id": "{run}", "key": "t", "value": None}}),
    ("POST", "experiments/set-experiment-tag", {"json": {"experiment_id": "{eid}", "key": "t"}}),
    ("POST", "experiments/create", {"json": {"name": "{exp_name}-tags", "tags": [{"key": "t"}]}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "params": [{"key": "q"}], "tags": [{"key": "u"}]}}),
    ("POST", "runs/create", {"json": {"experiment_id": "{eid}", "tags": [{"key": "t"}]}}),
    ("POST", "logged-models", {"json": {"experiment_id": "{eid}", "name": "nv", "params": [{"key": "p"}]}}),
    # Round G: keys with surrounding spaces (a batch with one is stored whole), limits in characters not bytes,
    # keys starting with '..', ids that name no run in a chart read, a GET's fields in its body, a byte-order
    # mark, the legacy model JSON's mandatory fields.
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "val loss ", "value": 1, "timestamp": 1}}),
    ("POST", "runs/log-batch", {"json": {"run_id": "{run}", "metrics": [
        {"key": "loss", "value": 1, "timestamp": 1, "step": 0}, {"key": " val acc", "value": 2, "timestamp": 1}]}}),
    ("POST", "runs/log-parameter", {"json": {"run_id": "{run}", "key": "lr ", "value": "0.1"}}),
    ("POST", "runs/set-tag", {"json": {"run_id": "{run}", "key": " note", "value": "x"}}),
    ("POST", "experiments/set-experiment-tag", {"json": {"experiment_id": "{eid}", "key": " k", "value": "v"}}),
    ("POST", "experiments/create", {"json": {"name": "{exp_name}" + "实" * 200}}),
    ("POST", "runs/create", {"json": {"experiment_id": "{eid}", "run_name": "名" * 200}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "损" * 167, "value": 1, "timestamp": 1}}),
    ("POST", "runs/log-parameter", {"json": {"run_id": "{run}", "key": "参" * 250, "value": "1"}}),
    ("POST", "runs/log-parameter", {"json": {"run_id": "{run}", "key": "参" * 251, "value": "1"}}),
    ("POST", "runs/log-metric", {"json": {"run_id": "{run}", "key": "..a", "value": 1, "timestamp": 1}}),
    ("POST", "runs/set-tag", {"json": {"run_id": "{run}", "key": "...", "value": "1"}}),
    ("GET", "metrics/get-history-bulk-interval", {"params": {"run_ids": "nope", "metric_key": "m"}}),
    ("GET", "metrics/get-history-bulk-interval", {"params": {"run_ids": "", "metric_key": "m"}}),
    ("GET", "experiments/get", {"json": {"experiment_id": "{eid}"}}),
    ("POST", "experiments/search", {"data": b"\xef\xbb\xbf{\"max_results\": 1}",
                                    "headers": {"Content-Type": "application/json"}}),
    ("POST", "runs/log-model", {"json": {"run_id": "{run}", "model_json": "{{}}"}}),
    ("POST", "runs/log-model", {"json": {"run_id": "{run}", "model_json":
        '{{"artifact_path": "m", "run_id": "{run}", "utc_time_created": "2026-01-01 00:00:00.000000"}}'}}),
    ("POST", "runs/log-model", {"json": {"run_id": "{run}", "model_json": '{{"artifact_path": "m", "run_id": "{run}", '
                                         '"utc_time_created": "2026-01-01 00:00:00.000000", "flavors": {{}}}}'}}),
]


@pytest.fixture(scope="module")
def mlflow_server():
    tmp = tempfile.mkdtemp(prefix="mlflow-ref-")
    port = _free_port()
    log = open(os.path.join(tmp, "server.log"), "wb")
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen(
        [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
         "--default-artifact-root", "mlflow-artifacts:/", "--artifacts-destination", f"{tmp}/artifacts",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"MLflow's server did not start; see {log.name}")
            time.sleep(0.2)
        yield url
    finally:
        # The server forks workers and may linger on SIGTERM: end the whole process group it leads, at once.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def fill(value, names):
    if isinstance(value, str):
        return value.format(**names) if "{" in value else value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value


def outcomes(base):
    """(status, error_code) of every case against one server, after the same setup."""
    s = requests.Session()

    def call(method, path, **kw):
        return s.request(method, f"{base}/api/2.0/mlflow/{path}", timeout=30, **kw)

    exp_name = f"cmp-{time.time_ns()}"
    eid = call("POST", "experiments/create", json={"name": exp_name}).json()["experiment_id"]
    new_run = lambda: call("POST", "runs/create", json={"experiment_id": eid, "start_time": 1}).json()["run"]["info"]["run_id"]
    run, dead = new_run(), new_run()
    call("POST", "runs/delete", json={"run_id": dead})
    call("POST", "runs/log-parameter", json={"run_id": run, "key": "p", "value": "1"})
    # An experiment deleted with its run still active: MLflow deletes the run with it.
    gone_eid = call("POST", "experiments/create", json={"name": exp_name + "-gone"}).json()["experiment_id"]
    orphan = call("POST", "runs/create", json={"experiment_id": gone_eid, "start_time": 1}).json()["run"]["info"]["run_id"]
    call("POST", "experiments/delete", json={"experiment_id": gone_eid})
    model = call("POST", "logged-models", json={"experiment_id": eid, "name": "m"}).json()["model"]["info"]["model_id"]
    names = {"exp_name": exp_name, "eid": eid, "run": run, "dead": dead, "gone_eid": gone_eid, "orphan": orphan,
             "model": model}
    out = []
    for method, path, kw in CASES:
        r = call(method, fill(path, names), **fill(kw, names))
        code = r.json().get("error_code") if r.headers.get("content-type", "").startswith("application/json") else None
        out.append((r.status_code, code))
    return out


def test_error_statuses_and_codes_match_mlflow(server, mlflow_server):
    theirs = outcomes(mlflow_server)
    ours = outcomes(server)
    diffs = [
        f"{m} {p}: mlflow {t}, flightlog {o}"
        for (m, p, _), t, o in zip(CASES, theirs, ours)
        if t != o
    ]
    assert not diffs, "\n".join(diffs)


# --- search results ------------------------------------------------------------------------------------------

# Filters and orders whose results (run names, in order) must be MLflow's: params/tags/metrics present, missing,
# NaN and ±Inf, conditions the store checks as it reads (params equality) and ones checked after, paging.
SEARCHES = [
    ("metrics.m0 > 0.5 and params.p0 = 'a'", ["metrics.m1 DESC"]),
    ("params.p0 = 'a'", ["metrics.m0 ASC"]),
    ("params.p0 = 'a' and params.p1 = 'c'", []),
    ("params.p1 != 'b'", ["params.p0 DESC"]),
    ("tags.team = 'x'", ["metrics.m2 DESC"]),
    ("tags.team != 'y' and metrics.m2 <= 0.3", ["metrics.m2 ASC"]),
    ("", ["metrics.m0 DESC"]),
    ("", ["metrics.m2 ASC", "params.p1 DESC"]),
    ("params.p2 IS NULL", ["attributes.start_time ASC"]),
    ("attributes.run_name LIKE 'run1%'", ["attributes.start_time ASC"]),
    ("metrics.m1 >= 0", ["tags.team ASC", "metrics.m1 DESC"]),
    ("params.p0 = 'zzz'", []),
    ("params.p0 = 'a' AND", ["attributes.start_time ASC"]),
    ("datasets.context != 'train'", ["attributes.start_time ASC"]),
    ("datasets.name = 'mnist' AND datasets.context = 'eval'", ["attributes.start_time ASC"]),
    ("datasets.context IN ('eval', 'x') AND datasets.digest != 'mnis'", ["attributes.start_time ASC"]),
    ("AND tags.team = 'x' and and metrics.m0 > 0.2", ["attributes.start_time ASC"]),
]


def logged_runs(base, seed=7):
    """The same 40 runs (distinct start times, so ties order the same) logged into one server."""
    import random

    rng = random.Random(seed)
    s = requests.Session()

    def call(path, body):
        r = s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30)
        assert r.ok, f"{path}: {r.status_code} {r.text[:200]}"
        return r.json()

    eid = call("experiments/create", {"name": f"search-{time.time_ns()}"})["experiment_id"]
    for i in range(40):
        run = call("runs/create", {"experiment_id": eid, "run_name": f"run{i}", "start_time": 1000 + i})["run"]
        params = [{"key": f"p{j}", "value": rng.choice("abc")} for j in range(3) if rng.random() > 0.15]
        metrics = []
        for j in range(3):
            if rng.random() < 0.15:
                continue
            v = rng.choice([rng.random(), rng.random(), rng.random(), 0.5, "NaN", "Infinity", "-Infinity"])
            metrics.append({"key": f"m{j}", "value": v, "timestamp": 5, "step": 0})
        tags = [{"key": "team", "value": rng.choice("xy")}] if rng.random() > 0.2 else []
        call("runs/log-batch", {"run_id": run["info"]["run_id"], "params": params, "metrics": metrics, "tags": tags})
        datasets = []
        for name in rng.sample(["mnist", "imagenet"], rng.randint(0, 2)):
            context = [{"key": "mlflow.data.context", "value": rng.choice(["train", "eval"])}]
            datasets.append({"dataset": {"name": name, "digest": name[:4], "source_type": "local", "source": "s"},
                             "tags": context if rng.random() < 0.6 else []})
        if datasets:
            call("runs/log-inputs", {"run_id": run["info"]["run_id"], "datasets": datasets})
    return s, eid


def search_names(base, session, eid, filter_string, order_by):
    """Run names of every page of one search, 7 runs a page."""
    names, token = [], None
    while True:
        body = {"experiment_ids": [eid], "filter": filter_string, "order_by": order_by, "max_results": 7}
        if token:
            body["page_token"] = token
        r = session.post(f"{base}/api/2.0/mlflow/runs/search", json=body, timeout=30)
        assert r.ok, f"{filter_string!r} {order_by}: {r.status_code} {r.text[:200]}"
        page = r.json()
        names += [run["info"]["run_name"] for run in page.get("runs", [])]
        token = page.get("next_page_token")
        if not token:
            return names


def test_search_results_match_mlflow(server, mlflow_server):
    theirs_s, theirs_eid = logged_runs(mlflow_server)
    ours_s, ours_eid = logged_runs(server)
    diffs = []
    for filter_string, order_by in SEARCHES:
        theirs = search_names(mlflow_server, theirs_s, theirs_eid, filter_string, order_by)
        ours = search_names(server, ours_s, ours_eid, filter_string, order_by)
        if theirs != ours:
            diffs.append(f"{filter_string!r} {order_by}:\n  mlflow    {theirs}\n  flightlog {ours}")
    assert not diffs, "\n".join(diffs)
    assert any(search_names(server, ours_s, ours_eid, f, o) for f, o in SEARCHES), "some search matches runs"


def model_search_names(base):
    """Four logged models with acc points (two each for A and B, in opposite order; one for C; none for D),
    then searches on them: names in the order each returns."""
    s = requests.Session()
    call = lambda path, body: s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30).json()
    eid = call("experiments/create", {"name": f"models-{time.time_ns()}"})["experiment_id"]
    run = call("runs/create", {"experiment_id": eid})["run"]["info"]["run_id"]
    for name, points in [("A", [(0.9, 1, 0), (0.3, 2, 1)]), ("B", [(0.3, 1, 0), (0.9, 2, 1)]), ("C", [(0.6, 1, 0)]),
                         ("D", [])]:
        model = call("logged-models", {"experiment_id": eid, "name": name, "source_run_id": run})
        for value, timestamp, step in points:
            call("runs/log-metric", {"run_id": run, "key": "acc", "value": value, "timestamp": timestamp,
                                     "step": step, "model_id": model["model"]["info"]["model_id"]})
    out = []
    for filter_string, order in [("metrics.acc > 0.5", None), ("metrics.acc < 0.5", None),
                                 ("", ("metrics.acc", True)), ("", ("metrics.acc", False)),
                                 ("name IN ('A', 'C')", None), ("name NOT IN ('A') AND metrics.acc > 0", None)]:
        body = {"experiment_ids": [eid], "filter": filter_string}
        if order:
            body["order_by"] = [{"field_name": order[0], "ascending": order[1]}]
        out.append([m["info"]["name"] for m in call("logged-models/search", body)["models"]])
    return out


# Logged-model searches restricted to datasets, over models whose metric points carry dataset names and digests.
DATASET_SEARCHES = [
    {"datasets": [{"dataset_name": "ds1", "dataset_digest": "d1"}]},
    {"datasets": [{"dataset_name": "ds2", "dataset_digest": "d2"}], "filter": "metrics.acc > 0.5"},
    {"datasets": [{"dataset_name": "ds1", "dataset_digest": "d1"}], "filter": "metrics.loss > 0"},
    {"datasets": [{"dataset_name": "ds1", "dataset_digest": "d1"}, {"dataset_name": "ds2", "dataset_digest": "d2"}],
     "filter": "metrics.acc < 0.6"},
    {"order_by": [{"field_name": "metrics.acc", "dataset_name": "ds1"}]},
    {"order_by": [{"field_name": "metrics.acc", "dataset_name": "ds2", "dataset_digest": "d2", "ascending": False}]},
]


def model_dataset_search_names(base):
    s = requests.Session()
    call = lambda path, body: s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30).json()
    eid = call("experiments/create", {"name": f"model-ds-{time.time_ns()}"})["experiment_id"]
    run = call("runs/create", {"experiment_id": eid, "start_time": 1})["run"]["info"]["run_id"]
    for name, points in [("alpha", [("acc", 0.5, "ds1", "d1"), ("acc", 0.9, "ds2", "d2")]),
                         ("beta", [("acc", 0.7, "ds1", "d1"), ("acc", 0.2, "ds2", "d2")]),
                         ("gamma", [("acc", 0.6, None, None)]),
                         ("delta", [("loss", 1.0, "ds1", "d1x")])]:
        mid = call("logged-models", {"experiment_id": eid, "name": name, "source_run_id": run})["model"]["info"]["model_id"]
        for i, (key, value, ds, digest) in enumerate(points):
            point = {"run_id": run, "key": key, "value": value, "timestamp": 10 + i, "step": 0, "model_id": mid}
            if ds:
                point.update(dataset_name=ds, dataset_digest=digest)
            call("runs/log-metric", point)
    return [[m["info"]["name"] for m in call("logged-models/search", {"experiment_ids": [eid], **body})
             .get("models", [])] for body in DATASET_SEARCHES]


def test_logged_model_search_on_datasets_matches_mlflow(server, mlflow_server):
    theirs = model_dataset_search_names(mlflow_server)
    ours = model_dataset_search_names(server)
    diffs = [f"{b}:\n  mlflow    {t}\n  flightlog {o}" for b, t, o in zip(DATASET_SEARCHES, theirs, ours) if t != o]
    assert not diffs, "\n".join(diffs)
    assert theirs[0] == ["beta", "alpha"], "naming a dataset keeps the models with points on it"


def source_run_searches(base):
    """A model logged in a run and one logged outside any, whose status is then set to UNSPECIFIED: the
    status read back, and the names in the order each search on the source run returns."""
    s = requests.Session()
    call = lambda method, path, body: s.request(method, f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30)
    eid = call("POST", "experiments/create", {"name": f"sources-{time.time_ns()}"}).json()["experiment_id"]
    run = call("POST", "runs/create", {"experiment_id": eid}).json()["run"]["info"]["run_id"]
    inside = call("POST", "logged-models", {"experiment_id": eid, "name": "inside", "source_run_id": run}).json()
    outside = call("POST", "logged-models", {"experiment_id": eid, "name": "outside"}).json()
    unspecified = call("PATCH", f"logged-models/{outside['model']['info']['model_id']}",
                       {"model_id": outside["model"]["info"]["model_id"], "status": "LOGGED_MODEL_STATUS_UNSPECIFIED"})
    out = [unspecified.status_code, unspecified.json()["model"]["info"]["status"],
           outside["model"]["info"].get("source_run_id"), inside["model"]["info"]["source_run_id"] == run]
    for filter_string, ascending in [("source_run_id = ''", None), (f"source_run_id != '{run}'", None),
                                     ("", True), ("", False)]:
        body = {"experiment_ids": [eid], "filter": filter_string}
        if ascending is not None:
            body["order_by"] = [{"field_name": "source_run_id", "ascending": ascending}]
        out.append([m["info"]["name"] for m in call("POST", "logged-models/search", body).json().get("models", [])])
    return out


def test_models_outside_runs_and_unspecified_status_match_mlflow(server, mlflow_server):
    theirs = source_run_searches(mlflow_server)
    assert source_run_searches(server) == theirs
    assert theirs[4] == ["outside"], "a model logged outside a run has '' for its source run"


def test_logged_model_search_on_metrics_matches_mlflow(server, mlflow_server):
    theirs = model_search_names(mlflow_server)
    assert model_search_names(server) == theirs
    assert theirs[0] == ["C", "B", "A"], "a metric condition holds when any point meets it"


# Points sent again, in new requests and within one: MLflow keys its metrics table on the whole point (key,
# timestamp, step, value, NaN flag), so a point it holds is not stored twice. XGBoost autologging counts on
# this: it sends its first iteration twice, in two requests listing the metrics in different orders.
REPEATS = [
    ("runs/log-batch", {"metrics": [{"key": "a", "value": 0.5, "timestamp": 10, "step": 0},
                                    {"key": "b", "value": 1.5, "timestamp": 10, "step": 0}]}),
    ("runs/log-batch", {"metrics": [{"key": "b", "value": 1.5, "timestamp": 10, "step": 0},
                                    {"key": "a", "value": 0.5, "timestamp": 10, "step": 0}]}),
    ("runs/log-batch", {"metrics": [{"key": "a", "value": 0.75, "timestamp": 10, "step": 0},
                                    {"key": "a", "value": 0.5, "timestamp": 11, "step": 0},
                                    {"key": "a", "value": 0.5, "timestamp": 10, "step": 1},
                                    {"key": "a", "value": 2, "timestamp": 12, "step": 2},
                                    {"key": "a", "value": 2, "timestamp": 12, "step": 2}]}),
    ("runs/log-metric", {"key": "a", "value": 2.0, "timestamp": 12, "step": 2}),
    ("runs/log-metric", {"key": "a", "value": "NaN", "timestamp": 13, "step": 3}),
    ("runs/log-metric", {"key": "a", "value": "NaN", "timestamp": 13, "step": 3}),
    ("runs/log-metric", {"key": "a", "value": "Infinity", "timestamp": 14, "step": 4}),
    ("runs/log-batch", {"metrics": [{"key": "a", "value": "Infinity", "timestamp": 14, "step": 4}],
                        "params": [{"key": "p", "value": "1"}]}),
    ("runs/log-metric", {"key": "a", "value": 0.0, "timestamp": 15, "step": 5}),
    ("runs/log-metric", {"key": "a", "value": -0.0, "timestamp": 15, "step": 5}),
]


def stored_histories(base):
    """Sends REPEATS to a new run of one server; each key's history as sorted (timestamp, step, value)."""
    s = requests.Session()

    def call(method, path, **kw):
        r = s.request(method, f"{base}/api/2.0/mlflow/{path}", timeout=30, **kw)
        assert r.ok, f"{path}: {r.status_code} {r.text[:200]}"
        return r.json()

    eid = call("POST", "experiments/create", json={"name": f"repeats-{time.time_ns()}"})["experiment_id"]
    run = call("POST", "runs/create", json={"experiment_id": eid})["run"]["info"]["run_id"]
    for path, body in REPEATS:
        call("POST", path, json={"run_id": run, **body})
    histories = {}
    for key in ["a", "b"]:
        got = call("GET", "metrics/get-history", params={"run_id": run, "metric_key": key})["metrics"]
        histories[key] = sorted((m["timestamp"], m["step"], str(m["value"])) for m in got)
    return histories


def test_repeated_points_are_stored_once_as_mlflow_stores_them(server, mlflow_server):
    theirs = stored_histories(mlflow_server)
    assert stored_histories(server) == theirs
    assert len(theirs["a"]) == 8 and len(theirs["b"]) == 1, "the case holds repeats to drop and points to keep"


def lifecycles_through_experiment_delete_and_restore(base):
    """Run names by view type after an experiment with an active and a deleted run is deleted, then restored."""
    s = requests.Session()
    call = lambda path, body: s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30).json()
    eid = call("experiments/create", {"name": f"cascade-{time.time_ns()}"})["experiment_id"]
    for name in ["kept", "gone"]:
        call("runs/create", {"experiment_id": eid, "run_name": name, "start_time": 1})
    gone = call("runs/search", {"experiment_ids": [eid], "filter": "attributes.run_name = 'gone'"})["runs"][0]
    call("runs/delete", {"run_id": gone["info"]["run_id"]})

    def by_view():
        return {view: sorted(r["info"]["run_name"] for r in call("runs/search", {
            "experiment_ids": [eid], "run_view_type": view}).get("runs", []))
            for view in ["ACTIVE_ONLY", "DELETED_ONLY"]}

    out = []
    for step in ["experiments/delete", "experiments/restore"]:
        call(step, {"experiment_id": eid})
        out.append(by_view())
    return out


def test_deleting_an_experiment_deletes_its_runs_as_on_mlflow(server, mlflow_server):
    theirs = lifecycles_through_experiment_delete_and_restore(mlflow_server)
    assert lifecycles_through_experiment_delete_and_restore(server) == theirs
    assert theirs[0] == {"ACTIVE_ONLY": [], "DELETED_ONLY": ["gone", "kept"]}


# A metric's "latest" value on MLflow is its greatest point by (step, timestamp, value), NaN counting as 0, the
# first logged of equal ones; not the point logged last. Each case: points (value, timestamp, step) in the
# order they are logged, one request each, then the same points again as one log-batch into another metric.
LATEST_CASES = [
    [(0.5, 1, 10), (0.9, 2, 5)],                  # a validation loop logging an earlier step
    [(1.0, 5, 1), (2.0, 9, 0)],
    [(1.0, 5, 0), (2.0, 4, 0)],                   # same step: the later timestamp wins
    [(2.0, 5, 0), (1.0, 5, 0)],                   # same step and time: the greater value
    [(1.0, 5, 0), ("NaN", 5, 0)],                 # NaN counts as 0
    [(-1.0, 5, 0), ("NaN", 5, 0)],
    [("NaN", 5, 0), (0.0, 5, 0)],                 # a tie: the first logged stays
    [("Infinity", 1, 0), (3.0, 1, 0)],
    [(0.25, 1, 3), (0.5, 2, 1), (0.75, 3, 2)],
]


def latest_metrics(base):
    """Per case, the latest value runs/get reports for the one-request-each and the one-batch metric, and which
    runs a `metrics.c0 < 0.6` search finds."""
    s = requests.Session()

    def call(path, body=None, params=None):
        r = s.request("POST" if body is not None else "GET", f"{base}/api/2.0/mlflow/{path}", json=body,
                      params=params, timeout=30)
        assert r.ok, f"{path}: {r.status_code} {r.text[:200]}"
        return r.json()

    eid = call("experiments/create", {"name": f"latest-{time.time_ns()}"})["experiment_id"]
    out = []
    for i, points in enumerate(LATEST_CASES):
        run = call("runs/create", {"experiment_id": eid, "run_name": f"case{i}", "start_time": i})["run"]
        rid = run["info"]["run_id"]
        metric = lambda key, p: {"key": key, "value": p[0], "timestamp": p[1], "step": p[2]}
        for p in points:
            call("runs/log-metric", {"run_id": rid, **metric("c0", p)})
        call("runs/log-batch", {"run_id": rid, "metrics": [metric("c1", p) for p in points]})
        got = call("runs/get", params={"run_id": rid})["run"]["data"]["metrics"]
        out.append(sorted((m["key"], str(m["value"]), m["timestamp"], m["step"]) for m in got))
    found = call("runs/search", {"experiment_ids": [eid], "filter": "metrics.c0 < 0.6",
                                 "order_by": ["attributes.run_name ASC"]})
    out.append([r["info"]["run_name"] for r in found.get("runs", [])])
    return out


def test_latest_metric_values_are_mlflows(server, mlflow_server):
    theirs = latest_metrics(mlflow_server)
    ours = latest_metrics(server)
    diffs = [f"{c}:\n  mlflow    {t}\n  flightlog {o}" for c, t, o in zip(LATEST_CASES + ["search"], theirs, ours)
             if t != o]
    assert not diffs, "\n".join(diffs)
    assert theirs[0][0][1] == "0.5", "the case logs an earlier step after a later one"


# Series shapes whose chart sampling (get-history-bulk-interval) must be MLflow's: the first point of each of
# max_results equal runs of points in (step, timestamp, value) order, and always the last point.
SAMPLED_SERIES = {
    "periodic": [(i % 7, 1000 + i, i) for i in range(1000)],
    "one_step": [(i, 1000 + i, 0) for i in range(300)],
    "backwards": [(i * 0.5, 5000 - i, 400 - i) for i in range(400)],
    "with_nan": [("NaN" if i % 50 == 0 else i, 1000 + i, i // 2) for i in range(200)],
}


def sampled(base):
    s = requests.Session()
    post = lambda path, body: s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30).json()
    eid = post("experiments/create", {"name": f"sampled-{time.time_ns()}"})["experiment_id"]
    rid = post("runs/create", {"experiment_id": eid, "start_time": 1})["run"]["info"]["run_id"]
    for key, points in SAMPLED_SERIES.items():
        for i in range(0, len(points), 1000):
            post("runs/log-batch", {"run_id": rid, "metrics": [
                {"key": key, "value": v, "timestamp": t, "step": st} for v, t, st in points[i:i + 1000]]})
    out = {}
    for key in SAMPLED_SERIES:
        for max_results in [1, 10, 320]:
            r = s.get(f"{base}/api/2.0/mlflow/metrics/get-history-bulk-interval", timeout=30,
                      params={"run_ids": rid, "metric_key": key, "max_results": max_results})
            assert r.ok, r.text[:200]
            out[key, max_results] = [(m["step"], m["timestamp"], str(m["value"])) for m in r.json()["metrics"]]
    return out


def test_chart_sampling_is_mlflows(server, mlflow_server):
    theirs = sampled(mlflow_server)
    ours = sampled(server)
    diffs = [f"{k}:\n  mlflow    {theirs[k][:12]}\n  flightlog {ours[k][:12]}" for k in theirs if theirs[k] != ours[k]]
    assert not diffs, "\n".join(diffs)
    assert len(theirs["one_step", 10]) == 10


def history_order(base):
    """get-history of points tied on (timestamp, step), NaN among them: MLflow orders a NaN as the 0 it stores."""
    s = requests.Session()
    post = lambda path, body: s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30).json()
    eid = post("experiments/create", {"name": f"order-{time.time_ns()}"})["experiment_id"]
    rid = post("runs/create", {"experiment_id": eid, "start_time": 1})["run"]["info"]["run_id"]
    points = [(0.1, 1, -2), ("NaN", 1, -2), (-0.5, 1, -2), ("Infinity", 1, -1), ("NaN", 1, -1), (2.0, 0, 5)]
    post("runs/log-batch", {"run_id": rid, "metrics": [
        {"key": "k", "value": v, "timestamp": t, "step": st} for v, t, st in points]})
    got = s.get(f"{base}/api/2.0/mlflow/metrics/get-history", params={"run_id": rid, "metric_key": "k"},
                timeout=30).json()["metrics"]
    return [(m["timestamp"], m["step"], str(m["value"])) for m in got]


def test_history_order_of_ties_is_mlflows(server, mlflow_server):
    theirs = history_order(mlflow_server)
    assert history_order(server) == theirs
    assert theirs[2:4] == [(1, -2, "NaN"), (1, -2, "0.1")]


# runs/update requests in order, each answered with the run's (status, end_time, run_name) as runs/get shows it.
# Left out where flightlog differs on purpose: a run ended without an end time gets now (MLflow leaves none),
# and a run reopened to RUNNING loses its end time (MLflow keeps the old one).
RUN_UPDATES = [
    {"status": "FINISHED", "end_time": 5000},
    {"end_time": 7000},                           # corrects a finished run's end time
    {"run_name": "renamed"},
    {"status": "FAILED", "end_time": 9000},
    {"end_time": 8000, "run_name": "again"},
    {"status": "KILLED"},                         # another ended status keeps the end time
]


def run_updates(base):
    s = requests.Session()
    post = lambda path, body: s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30).json()
    eid = post("experiments/create", {"name": f"update-{time.time_ns()}"})["experiment_id"]
    rid = post("runs/create", {"experiment_id": eid, "start_time": 1000, "run_name": "r"})["run"]["info"]["run_id"]
    out = []
    for update in RUN_UPDATES:
        post("runs/update", {"run_id": rid, **update})
        info = s.get(f"{base}/api/2.0/mlflow/runs/get", params={"run_id": rid}, timeout=30).json()["run"]["info"]
        out.append((info["status"], info.get("end_time"), info["run_name"]))
    return out


def test_run_updates_are_mlflows(server, mlflow_server):
    theirs = run_updates(mlflow_server)
    assert run_updates(server) == theirs
    assert theirs[1] == ("FINISHED", 7000, "r"), "the case corrects an end time alone"


def logged_inputs(base):
    """runs/get's inputs after a full dataset input and one that leaves out its digest, source and schema."""
    s = requests.Session()
    post = lambda path, body: s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30)
    eid = post("experiments/create", {"name": f"inputs-{time.time_ns()}"}).json()["experiment_id"]
    rid = post("runs/create", {"experiment_id": eid, "start_time": 1}).json()["run"]["info"]["run_id"]
    full = {"name": "mnist", "digest": "abc123", "source_type": "local", "source": "{\"uri\": \"/d\"}",
            "schema": "{}", "profile": "{\"rows\": 3}"}
    r = post("runs/log-inputs", {"run_id": rid, "datasets": [
        {"dataset": full, "tags": [{"key": "mlflow.data.context", "value": "train"}]},
        {"dataset": {"name": "bare"}}]})
    assert r.ok, r.text[:200]
    inputs = s.get(f"{base}/api/2.0/mlflow/runs/get", params={"run_id": rid}, timeout=30).json()["run"]["inputs"]
    return sorted(([d["dataset"], d.get("tags", [])] for d in inputs["dataset_inputs"]),
                  key=lambda d: d[0]["name"])


def test_dataset_inputs_are_stored_as_mlflow_stores_them(server, mlflow_server):
    theirs = logged_inputs(mlflow_server)
    assert logged_inputs(server) == theirs
    assert theirs[0][0]["digest"] == "", "the bare dataset's digest reads as empty"


def relogged_datasets(base):
    """Inputs of two runs after one dataset is logged again with other contexts and another source, and which
    run a context filter finds: MLflow keeps one input per run and dataset, and one dataset per experiment."""
    s = requests.Session()
    post = lambda path, body: s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30)
    eid = post("experiments/create", {"name": f"relogged-{time.time_ns()}"}).json()["experiment_id"]
    runs = [post("runs/create", {"experiment_id": eid, "run_name": f"r{i}", "start_time": i}).json()["run"]["info"]
            ["run_id"] for i in range(2)]
    d = {"name": "d", "digest": "g1", "source_type": "local", "source": "first", "schema": "s1"}
    ctx = lambda c: [{"key": "mlflow.data.context", "value": c}]
    for inputs in [[{"dataset": d, "tags": ctx("train")}], [{"dataset": d, "tags": ctx("eval")}], [{"dataset": d}],
                   [{"dataset": {**d, "source": "second"}, "tags": ctx("eval")},
                    {"dataset": {**d, "digest": "g2"}, "tags": ctx("eval")}]]:
        assert post("runs/log-inputs", {"run_id": runs[0], "datasets": inputs}).ok
    assert post("runs/log-inputs", {"run_id": runs[1], "datasets": [
        {"dataset": {"name": "d", "digest": "g1", "source_type": "local", "source": "other"}, "tags": ctx("eval")}]}).ok
    out = []
    for rid in runs:
        inputs = s.get(f"{base}/api/2.0/mlflow/runs/get", params={"run_id": rid}, timeout=30).json()["run"]["inputs"]
        out.append(sorted(json.dumps(i, sort_keys=True) for i in inputs["dataset_inputs"]))
    found = post("runs/search", {"experiment_ids": [eid], "filter": "datasets.context = 'eval' AND datasets.digest = 'g1'"})
    out.append(sorted(r["info"]["run_name"] for r in found.json().get("runs", [])))
    return out


def test_relogged_datasets_are_kept_once_as_on_mlflow(server, mlflow_server):
    theirs = relogged_datasets(mlflow_server)
    assert relogged_datasets(server) == theirs
    assert len(theirs[0]) == 2 and len(theirs[1]) == 1, "one input per dataset of the run"


def quoting_and_spaced_keys(base):
    """Runs whose param holds quotes and backslashes, searched with doubled and escaped quotes (MLflow strips only
    the outer quotes), and the keys a batch with surrounding spaces stored."""
    s = requests.Session()
    call = lambda path, body: s.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30).json()
    eid = call("experiments/create", {"name": f"quotes-{time.time_ns()}"})["experiment_id"]
    for i, value in enumerate(["it's", "it''s", "it\\'s", "its"]):
        run = call("runs/create", {"experiment_id": eid, "run_name": f"q{i}", "start_time": i})["run"]["info"]["run_id"]
        call("runs/log-parameter", {"run_id": run, "key": "p", "value": value})
    out = []
    for f in ["params.p = 'it''s'", "params.p = \"it's\"", "params.p = 'it\\'s'", "params.p LIKE 'it''%'",
              "params.p LIKE '%''%'", "attributes.run_name = 'q0'"]:
        r = s.post(f"{base}/api/2.0/mlflow/runs/search", json={"experiment_ids": [eid], "filter": f,
                                                              "order_by": ["attributes.start_time ASC"]}, timeout=30)
        out.append((f, r.status_code, [x["info"]["run_name"] for x in r.json().get("runs", [])]))
    run = call("runs/create", {"experiment_id": eid})["run"]["info"]["run_id"]
    call("runs/log-batch", {"run_id": run, "metrics": [{"key": "loss", "value": 1, "timestamp": 1, "step": 0},
                                                       {"key": "val loss ", "value": 2, "timestamp": 1, "step": 0}],
                            "params": [{"key": " lr", "value": "1"}], "tags": [{"key": "t ", "value": "x"}]})
    data = s.get(f"{base}/api/2.0/mlflow/runs/get", params={"run_id": run}, timeout=30).json()["run"]["data"]
    keys = {kind: sorted(x["key"] for x in data.get(kind, []) if not x["key"].startswith("mlflow."))
            for kind in ["metrics", "params", "tags"]}
    return out, keys


def test_quotes_in_filters_and_spaced_keys_are_mlflows(server, mlflow_server):
    theirs, ours = quoting_and_spaced_keys(mlflow_server), quoting_and_spaced_keys(server)
    assert ours == theirs
    assert ours[1]["metrics"] == ["loss", "val loss "], ours
    assert any(names for _, _, names in ours[0]), ours
