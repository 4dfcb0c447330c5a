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
