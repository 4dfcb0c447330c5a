"""One run history, two APIs: MLflow-logged runs through the native API, native runs through MlflowClient."""

import mlflow

from conftest import api


def test_mlflow_run_is_visible_natively(client, experiment, server):
    with mlflow.start_run(run_name="seen-natively") as run:
        mlflow.log_param("lr", "0.1")
        mlflow.log_metric("loss", 0.5, step=3)
    native = api(server, "GET", f"/api/v1/runs/{run.info.run_id}").json()
    assert native["display_name"] == "seen-natively"
    assert native["status"] == "Completed"
    assert native["params"] == {"lr": "0.1"}
    loss = next(m for m in native["metrics"] if m["name"] == "loss")
    assert loss["kind"] == "scalar" and loss["last_value"] == 0.5 and loss["last_step"] == 3
    series = api(server, "GET", f"/api/v1/runs/{run.info.run_id}/metrics/loss").json()
    assert series["steps"] == [3] and series["values"] == [0.5]


def test_native_run_is_readable_with_mlflow_client(client, experiment, server):
    new = {"experiment_id": experiment.experiment_id, "display_name": "native", "params": {"bs": "32"},
           "tags": {"k": "v"}}
    run = api(server, "POST", "/api/v1/runs", json=new).json()
    batch = {"scalars": [{"name": "acc", "steps": [0, 1, 2], "values": [0.1, 0.5, "NaN"]}],
             "metrics": [{"kind": "text", "name": "msg", "values": ["hello"]}]}
    assert api(server, "POST", f"/api/v1/runs/{run['id']}/batch", json=batch).ok
    api(server, "PATCH", f"/api/v1/runs/{run['id']}", json={"status": "Completed"})
    got = client.get_run(run["id"])
    assert got.info.run_name == "native" and got.info.status == "FINISHED"
    assert got.data.params == {"bs": "32"} and got.data.tags["k"] == "v"
    assert set(got.data.metrics) == {"acc"}  # text metrics are flightlog-only
    hist = client.get_metric_history(run["id"], "acc")
    assert [m.step for m in hist] == [0, 1, 2]
    found = mlflow.search_runs(filter_string="params.bs = '32'", output_format="list")
    assert [r.info.run_id for r in found] == [run["id"]]


def test_lightning_style_logger_flow(client, server):
    """What PyTorch Lightning's MLFlowLogger does: look up or create the experiment, create a run, params in
    chunks of 100, one log-batch per step, then terminate the run."""
    from mlflow.entities import Metric, Param

    name = "lightning-like"
    exp = client.get_experiment_by_name(name)
    eid = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(eid, tags={"mlflow.user": "trainer", "mlflow.source.name": "train.py"})
    rid = run.info.run_id
    params = [Param(f"hp{i}", str(i)[:250]) for i in range(250)]
    for i in range(0, len(params), 100):
        client.log_batch(rid, params=params[i : i + 100])
    for step in range(20):
        client.log_batch(rid, metrics=[Metric("train_loss", 1.0 / (step + 1), 1_700_000_000_000 + step, step),
                                       Metric("lr", 0.1, 1_700_000_000_000 + step, step)])
    client.set_terminated(rid, "FINISHED")
    got = client.get_run(rid)
    assert len(got.data.params) == 250 and got.info.user_id == "trainer"
    assert got.data.metrics["train_loss"] == 1.0 / 20 and got.info.status == "FINISHED"
    assert len(client.get_metric_history(rid, "train_loss")) == 20
    # A name the native API logged as another kind cannot be logged as an MLflow metric.
    batch = {"metrics": [{"kind": "text", "name": "note", "values": ["x"]}]}
    assert api(server, "POST", f"/api/v1/runs/{rid}/batch", json=batch).ok
    body = {"run_id": rid, "metrics": [{"key": "note", "value": 1, "timestamp": 1, "step": 0}]}
    r = api(server, "POST", "/api/2.0/mlflow/runs/log-batch", json=body)
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
