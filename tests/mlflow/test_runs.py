"""Runs and logging through the fluent API and MlflowClient: metrics (sync and async), params, tags, nesting,
statuses, resume, delete/restore, history paging, validation errors and idempotent log-batch."""

import math
import time

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from conftest import api


def test_fluent_run_with_nesting(client, experiment):
    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"opt": "adam", "layers": 3})
        mlflow.set_tag("team", "vision")
        mlflow.set_tags({"a": "1", "b": "2"})
        mlflow.log_metric("loss", 0.5, step=0)
        mlflow.log_metric("loss", 0.25, step=1)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=1)
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("x", 1.0)
    run = client.get_run(parent.info.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "parent"
    assert run.info.experiment_id == experiment.experiment_id
    assert run.info.end_time >= run.info.start_time
    assert run.data.params == {"lr": "0.01", "opt": "adam", "layers": "3"}
    assert run.data.metrics == {"loss": 0.25, "acc": 0.9, "f1": 0.8}
    assert run.data.tags["team"] == "vision" and run.data.tags["mlflow.runName"] == "parent"
    assert run.info.artifact_uri == f"mlflow-artifacts:/{experiment.experiment_id}/{run.info.run_id}/artifacts"
    kid = client.get_run(child.info.run_id)
    assert kid.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert kid.info.run_name == "child"
    kids = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list")
    assert [r.info.run_id for r in kids] == [child.info.run_id]


def test_async_logging(client, experiment):
    with mlflow.start_run() as run:
        for step in range(50):
            mlflow.log_metric("async_loss", 1.0 / (step + 1), step=step, synchronous=False)
        mlflow.log_metrics({"m1": 1.0, "m2": 2.0}, step=0, synchronous=False)
        mlflow.log_param("p", "v", synchronous=False)
        mlflow.set_tag("t", "v", synchronous=False)
        mlflow.flush_async_logging()
    hist = client.get_metric_history(run.info.run_id, "async_loss")
    assert [m.step for m in hist] == list(range(50))
    data = client.get_run(run.info.run_id).data
    assert data.metrics["m2"] == 2.0 and data.params["p"] == "v" and data.tags["t"] == "v"


def test_end_run_statuses_and_update(client, experiment):
    r = client.create_run(experiment.experiment_id, run_name="manual")
    client.set_terminated(r.info.run_id, "KILLED")
    assert client.get_run(r.info.run_id).info.status == "KILLED"
    r = client.create_run(experiment.experiment_id)
    client.update_run(r.info.run_id, status="FAILED", name="renamed")
    got = client.get_run(r.info.run_id)
    assert got.info.status == "FAILED" and got.info.run_name == "renamed"
    mlflow.start_run()
    mlflow.end_run(status="FAILED")
    assert client.get_run(mlflow.last_active_run().info.run_id).info.status == "FAILED"
    # An ended run cannot go back to SCHEDULED (a difference docs/mlflow.md lists); the refusal names its status.
    with pytest.raises(MlflowException) as e:
        client.update_run(r.info.run_id, status="SCHEDULED")
    assert "from Failed to Queued" in e.value.message
    assert client.get_run(r.info.run_id).info.status == "FAILED"


def test_resume_finished_run(client, experiment, server):
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.0, step=0)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    with mlflow.start_run(run_id=run.info.run_id):
        assert client.get_run(run.info.run_id).info.status == "RUNNING"
        assert client.get_run(run.info.run_id).info.end_time is None
        mlflow.log_metric("m", 2.0, step=1)
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FINISHED" and got.data.metrics["m"] == 2.0
    native = api(server, "GET", f"/api/v1/runs/{run.info.run_id}").json()
    assert native["status"] == "Completed"


def test_delete_and_restore_run(client, experiment):
    with mlflow.start_run() as run:
        pass
    rid = run.info.run_id
    client.delete_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    ids = lambda vt: [r.info.run_id for r in client.search_runs([experiment.experiment_id], run_view_type=vt)]
    assert rid not in ids(mlflow.entities.ViewType.ACTIVE_ONLY)
    assert rid in ids(mlflow.entities.ViewType.DELETED_ONLY)
    with pytest.raises(MlflowException) as e:
        client.log_metric(rid, "m", 1.0)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and e.value.get_http_status_code() == 400
    with pytest.raises(MlflowException) as e:
        client.log_param(rid, "p", "1")
    assert e.value.get_http_status_code() == 400
    client.restore_run(rid)
    assert rid in ids(mlflow.entities.ViewType.ACTIVE_ONLY)
    client.log_metric(rid, "m", 1.0)


def test_tags_set_and_delete(client, experiment):
    r = client.create_run(experiment.experiment_id)
    client.set_tag(r.info.run_id, "k", "v")
    client.set_tag(r.info.run_id, "mlflow.runName", "renamed-by-tag")
    got = client.get_run(r.info.run_id)
    assert got.data.tags["k"] == "v" and got.info.run_name == "renamed-by-tag"
    client.delete_tag(r.info.run_id, "k")
    assert "k" not in client.get_run(r.info.run_id).data.tags
    with pytest.raises(MlflowException) as e:
        client.delete_tag(r.info.run_id, "k")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_validation_matches_mlflow(client, experiment, server):
    r = client.create_run(experiment.experiment_id)
    rid = r.info.run_id
    client.log_param(rid, "p", "1")
    client.log_param(rid, "p", "1")  # same value: fine
    with pytest.raises(MlflowException) as e:
        client.log_param(rid, "p", "2")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "Changing param values is not allowed" in e.value.message
    for bad in ["bad!key", "../up", "k" * 251]:
        with pytest.raises(MlflowException) as e:
            client.log_metric(rid, bad, 1.0)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE", bad
    client.log_param(rid, "long", "x" * 7000)  # truncated, as MLflow does
    assert len(client.get_run(rid).data.params["long"]) == 6000
    body = {"run_id": rid, "metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": i} for i in range(1001)]}
    resp = api(server, "POST", "/api/2.0/mlflow/runs/log-batch", json=body)
    assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    body = {"run_id": rid, "params": [{"key": "d", "value": "1"}, {"key": "d", "value": "1"}]}
    resp = api(server, "POST", "/api/2.0/mlflow/runs/log-batch", json=body)
    assert resp.status_code == 400 and "Duplicate parameter keys" in resp.json()["message"]
    resp = api(server, "GET", "/api/2.0/mlflow/runs/get", params={"run_id": "0" * 32})
    assert resp.status_code == 404 and resp.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    resp = api(server, "POST", "/api/2.0/mlflow/runs/log-metric", json={"run_id": rid, "key": "m", "value": 1})
    assert resp.status_code == 400 and "timestamp" in resp.json()["message"]
    # Times flightlog cannot store exactly are refused, not clamped (clamped, distinct points became equal and
    # all but one were dropped as repeats, after a 200).
    for ts in [2**63 - 1, 9223372036854776, -1]:
        for path, body in [("runs/log-metric", {"key": "t", "value": ts % 7, "timestamp": ts}),
                           ("runs/log-batch", {"metrics": [{"key": "t", "value": 1, "timestamp": ts, "step": 0}]})]:
            resp = api(server, "POST", f"/api/2.0/mlflow/{path}", json={"run_id": rid, **body})
            assert resp.status_code == 400 and "imestamp" in resp.json()["message"], (path, ts, resp.text)
    resp = api(server, "POST", "/api/2.0/mlflow/runs/update", json={"run_id": rid, "status": "FINISHED",
                                                                  "end_time": 2**63 - 1})
    assert resp.status_code == 400 and "end_time" in resp.json()["message"]
    assert client.get_metric_history(rid, "t") == []
    # As on MLflow's server, a search names its experiments: none finds nothing (not every run).
    resp = api(server, "POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": []})
    assert resp.status_code == 200 and resp.json().get("runs", []) == []
    # Errors outside the handlers keep the MLflow shape too, naming the whole path.
    resp = api(server, "GET", "/api/2.0/mlflow/runs/create")
    assert resp.status_code == 405 and resp.json()["error_code"] == "METHOD_NOT_ALLOWED", resp.text
    resp = api(server, "GET", "/ajax-api/2.0/mlflow/runs/nonexistent")
    assert resp.status_code == 404 and "/ajax-api/2.0/mlflow/runs/nonexistent" in resp.json()["message"]


def test_nan_and_infinity(client, experiment):
    r = client.create_run(experiment.experiment_id)
    rid = r.info.run_id
    client.log_metric(rid, "v", float("nan"), step=0)
    client.log_metric(rid, "v", float("inf"), step=1)
    client.log_metric(rid, "v", float("-inf"), step=2)
    hist = client.get_metric_history(rid, "v")
    assert math.isnan(hist[0].value)
    assert hist[1].value == 1.7976931348623157e308 and hist[2].value == -1.7976931348623157e308


def test_log_batch_history_paging_and_idempotent_replay(client, experiment, server):
    r = client.create_run(experiment.experiment_id)
    rid = r.info.run_id
    now = int(time.time() * 1000)
    for chunk in range(3):
        metrics = [Metric("h", float(i), now + i, i) for i in range(chunk * 1000, (chunk + 1) * 1000)]
        client.log_batch(rid, metrics=metrics, params=[Param(f"p{chunk}", "v")], tags=[RunTag("t", "v")])
    hist = client.get_metric_history(rid, "h")
    assert [m.step for m in hist] == list(range(3000))
    page = api(server, "GET", "/api/2.0/mlflow/metrics/get-history",
               params={"run_id": rid, "metric_key": "h", "max_results": 1000}).json()
    assert len(page["metrics"]) == 1000 and page["next_page_token"]
    page2 = api(server, "GET", "/api/2.0/mlflow/metrics/get-history",
                params={"run_id": rid, "metric_key": "h", "max_results": 1000, "page_token": page["next_page_token"]}).json()
    assert page2["metrics"][0]["step"] == 1000
    # A retried request (same body) is stored once.
    body = {"run_id": rid, "metrics": [{"key": "r", "value": 1.5, "timestamp": now, "step": 7}]}
    for _ in range(2):
        assert api(server, "POST", "/api/2.0/mlflow/runs/log-batch", json=body).status_code == 200
    assert len(client.get_metric_history(rid, "r")) == 1
    bulk = api(server, "GET", "/api/2.0/mlflow/metrics/get-history-bulk-interval",
               params={"run_ids": [rid], "metric_key": "h", "max_results": 100, "start_step": 0, "end_step": 2999}).json()
    assert 0 < len(bulk["metrics"]) <= 100 and bulk["metrics"][0]["run_id"] == rid
    assert client.get_metric_history(rid, "unknown") == []


def _history_pages(server, rid, key, size, token=None):
    got = []
    while True:
        params = {"run_id": rid, "metric_key": key, "max_results": size}
        if token:
            params["page_token"] = token
        page = api(server, "GET", "/api/2.0/mlflow/metrics/get-history", params=params).json()
        got += [(m["timestamp"], m["step"], m["value"]) for m in page.get("metrics", [])]
        token = page.get("next_page_token")
        if not token:
            return got


def test_history_pages_are_in_mlflow_order_also_when_points_arrive_between_pages(client, experiment, server):
    rid = client.create_run(experiment.experiment_id).info.run_id
    now = int(time.time() * 1000)
    # Logged out of order: pages follow (timestamp, step, value), as MLflow's server orders them.
    points = [(now + (i * 7) % 23, i % 5, float(i)) for i in range(23)]
    client.log_batch(rid, metrics=[Metric("o", v, ts, step) for ts, step, v in points])
    assert _history_pages(server, rid, "o", 4) == sorted(points)
    # In order: the first page is taken, then an earlier point arrives; the next pages are the rest of the
    # new order (offset paging over the current history, like MLflow's), nothing stale.
    ordered = [(now + i, i, float(i)) for i in range(10)]
    client.log_batch(rid, metrics=[Metric("s", v, ts, step) for ts, step, v in ordered])
    first = api(server, "GET", "/api/2.0/mlflow/metrics/get-history",
                params={"run_id": rid, "metric_key": "s", "max_results": 4}).json()
    assert [m["step"] for m in first["metrics"]] == [0, 1, 2, 3]
    client.log_metric(rid, "s", -1.0, timestamp=now - 5, step=99)
    rest = _history_pages(server, rid, "s", 4, token=first["next_page_token"])
    assert rest == sorted(ordered + [(now - 5, 99, -1.0)])[4:]
    garbage = api(server, "GET", "/api/2.0/mlflow/metrics/get-history",
                  params={"run_id": rid, "metric_key": "s", "page_token": "zz"})
    assert garbage.status_code == 400 and garbage.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_note_is_the_description_and_names_must_agree(client, experiment, server):
    r = client.create_run(experiment.experiment_id, tags={"mlflow.note.content": "first"})
    rid = r.info.run_id
    assert api(server, "GET", f"/api/v1/runs/{rid}").json()["description"] == "first"
    client.set_tag(rid, "mlflow.note.content", "# Notes\nsecond")
    assert api(server, "GET", f"/api/v1/runs/{rid}").json()["description"] == "# Notes\nsecond"
    assert client.get_run(rid).data.tags["mlflow.note.content"] == "# Notes\nsecond"
    client.delete_tag(rid, "mlflow.note.content")
    assert "mlflow.note.content" not in client.get_run(rid).data.tags
    with pytest.raises(MlflowException) as e:
        client.create_run(experiment.experiment_id, run_name="a", tags={"mlflow.runName": "b"})
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    client.delete_run(rid)
    client.delete_run(rid)  # deleting twice is harmless
    client.restore_run(rid)
    client.restore_run(rid)


def test_dataset_inputs_of_the_wrong_shape_are_refused_and_the_run_stays_readable(client, experiment, server):
    # Stored as sent, such inputs made every later get_run and search_runs of the experiment fail to parse
    # (and a datasets entry that was not an object panicked the handler): they are 400s, and nothing is stored.
    run = client.create_run(experiment.experiment_id)
    rid = run.info.run_id
    good = {"name": "n", "digest": "d", "source_type": "local", "source": "s"}
    for body in [{"datasets": [5]}, {"datasets": ["x"]}, {"datasets": [{"dataset": {**good, "name": 5}}]},
                 {"datasets": [{"dataset": good, "tags": 5}]}, {"datasets": [{"dataset": good, "tags": [7]}]},
                 {"models": [5]}, {"datasets": [{"dataset": good}] * 1001}]:
        r = api(server, "POST", "/api/2.0/mlflow/runs/log-inputs", json={"run_id": rid, **body})
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", (body, r.text[:200])
    assert client.get_run(rid).inputs.dataset_inputs == []
    r = api(server, "POST", "/api/2.0/mlflow/runs/log-inputs", json={"run_id": rid, "datasets": [{"dataset": good}]})
    assert r.ok, r.text
    assert [d.dataset.name for d in client.get_run(rid).inputs.dataset_inputs] == ["n"]
    assert len(mlflow.search_runs([experiment.experiment_id], output_format="list")) == 1


def test_large_dataset_schemas_fill_a_run_not_its_experiment(client, experiment, server):
    # Each dataset of an experiment is kept on its own, so large schemas logged by one run never keep another
    # run's datasets out; a run's own inputs are bounded (4 MiB), and past that the answer says so.
    full, other = (client.create_run(experiment.experiment_id).info.run_id for _ in range(2))
    schema = "s" * 1_000_000
    answers = []
    for i in range(5):
        r = api(server, "POST", "/api/2.0/mlflow/runs/log-inputs", json={"run_id": full, "datasets": [
            {"dataset": {"name": f"big{i}", "digest": "d", "source_type": "local", "source": "s", "schema": schema}}]})
        answers.append(r.status_code)
    assert answers[:3] == [200, 200, 200] and answers[-1] == 400, answers
    assert "per run" in r.json()["message"]
    assert len(client.get_run(full).inputs.dataset_inputs) == answers.count(200)
    r = api(server, "POST", "/api/2.0/mlflow/runs/log-inputs", json={"run_id": other, "datasets": [
        {"dataset": {"name": "small", "digest": "d", "source_type": "local", "source": "s"}}]})
    assert r.ok, r.text
    assert [d.dataset.name for d in client.get_run(other).inputs.dataset_inputs] == ["small"]
