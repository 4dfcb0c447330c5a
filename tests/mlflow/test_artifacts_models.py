"""Artifacts through the proxied artifact API (stored with native uploads), and MLflow 3 logged models:
pyfunc log_model / load_model("runs:/...") round trip."""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pytest  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from conftest import api  # noqa: E402


def test_artifact_calls_land_in_native_storage(client, experiment, server, tmp_path):
    (tmp_path / "hello.txt").write_text("hi")
    sub = tmp_path / "dir"
    (sub / "nested").mkdir(parents=True)
    (sub / "a.txt").write_text("a")
    (sub / "nested" / "b.txt").write_text("bb")
    (sub / "nested" / "empty.bin").write_bytes(b"")
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "hello.txt"))
        mlflow.log_artifacts(str(sub), artifact_path="data")
        mlflow.log_dict({"k": [1, 2]}, "config/params.json")
        mlflow.log_text("some text", "notes.txt")
        mlflow.log_figure(fig, "plots/curve.png")
        mlflow.log_image(np.zeros((8, 8, 3), dtype=np.uint8), "images/black.png")
        mlflow.log_table(data=pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), artifact_file="tables/t.json")
    rid = run.info.run_id
    top = {f.path: f.is_dir for f in client.list_artifacts(rid)}
    assert top == {"hello.txt": False, "data": True, "config": True, "notes.txt": False,
                   "plots": True, "images": True, "tables": True}
    assert {f.path for f in client.list_artifacts(rid, "data")} == {"data/a.txt", "data/nested"}
    sizes = {f.path: f.file_size for f in client.list_artifacts(rid, "data/nested")}
    # An empty file's size is left out, as MLflow's server (proto3) leaves out zeros: None to the client.
    assert sizes == {"data/nested/b.txt": 2, "data/nested/empty.bin": None}
    out = client.download_artifacts(rid, "config/params.json", str(tmp_path / "dl"))
    assert json.load(open(out)) == {"k": [1, 2]}
    assert mlflow.artifacts.load_text(f"runs:/{rid}/notes.txt") == "some text"
    whole = client.download_artifacts(rid, "data", str(tmp_path / "dl2"))
    assert open(os.path.join(whole, "nested", "b.txt")).read() == "bb"
    native = api(server, "GET", f"/api/v1/runs/{rid}/artifacts", params={"recursive": "true"}).json()["items"]
    paths = {i["path"] for i in native}
    assert {"hello.txt", "data/nested/b.txt", "plots/curve.png", "images/black.png", "tables/t.json"} <= paths
    assert api(server, "GET", f"/api/v1/runs/{rid}/artifacts/notes.txt").text == "some text"


def test_proxied_artifact_api_on_the_wire(client, experiment, server):
    r = client.create_run(experiment.experiment_id)
    base = f"/api/2.0/mlflow-artifacts/artifacts/{experiment.experiment_id}/{r.info.run_id}/artifacts"
    assert api(server, "PUT", f"{base}/x/y.bin", data=b"\x00\x01").status_code == 200
    assert api(server, "GET", f"{base}/x/y.bin").content == b"\x00\x01"
    listing = api(server, "GET", "/api/2.0/mlflow-artifacts/artifacts",
                  params={"path": f"{experiment.experiment_id}/{r.info.run_id}/artifacts/x"}).json()
    assert listing == {"files": [{"path": "y.bin", "is_dir": False, "file_size": 2}]}
    empty = api(server, "GET", "/api/2.0/mlflow-artifacts/artifacts",
                params={"path": f"{experiment.experiment_id}/{r.info.run_id}/artifacts/none"}).json()
    assert empty == {}
    assert api(server, "GET", f"{base}/x").status_code == 404
    escape = api(server, "PUT", f"{base}/..%2F..%2Fescape.txt", data=b"no")
    assert escape.status_code == 400 and escape.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    wrong_exp = api(server, "GET", f"/api/2.0/mlflow-artifacts/artifacts/999/{r.info.run_id}/artifacts/x/y.bin")
    assert wrong_exp.status_code == 404
    assert api(server, "DELETE", f"{base}/x/y.bin").status_code == 200
    assert api(server, "GET", f"{base}/x/y.bin").status_code == 404
    # Deleting it again succeeds, as on MLflow's proxy (mlflow gc may delete a path twice).
    assert api(server, "DELETE", f"{base}/x/y.bin").status_code == 200


class AddN(mlflow.pyfunc.PythonModel):
    def __init__(self, n):
        self.n = n

    def predict(self, context, model_input, params=None):
        return model_input.apply(lambda col: col + self.n)


def test_pyfunc_log_and_load_model(client, experiment):
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=AddN(5), pip_requirements=["mlflow"])
    assert info.model_id.startswith("m-")
    model = client.get_logged_model(info.model_id)
    assert model.status.to_proto() == 2 or str(model.status).endswith("READY")
    assert model.source_run_id == run.info.run_id
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    out = loaded.predict(pd.DataFrame({"a": [1, 2]}))
    assert list(out["a"]) == [6, 7]
    again = mlflow.pyfunc.load_model(f"models:/{info.model_id}")
    assert list(again.predict(pd.DataFrame({"a": [0]}))["a"]) == [5]
    found = client.search_logged_models(experiment_ids=[experiment.experiment_id], filter_string="name = 'model'")
    assert [m.model_id for m in found] == [info.model_id]


def test_models_keep_their_files_apart_from_runs(client, experiment):
    # MLflow 3 logs a model with no run, and keeps a run's models out of its artifacts.
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    alone = mlflow.pyfunc.log_model(name="alone", python_model=AddN(2), pip_requirements=["mlflow"])
    assert not client.get_logged_model(alone.model_id).source_run_id
    assert list(mlflow.pyfunc.load_model(alone.model_uri).predict(pd.DataFrame({"a": [1]}))["a"]) == [3]
    external = mlflow.create_external_model(name="ext")
    assert "MLmodel" in [f.path for f in mlflow.artifacts.list_artifacts(f"models:/{external.model_id}")]
    with mlflow.start_run() as run:
        mlflow.log_text("mine", "models/readme.txt")
        inside = mlflow.pyfunc.log_model(name="inside", python_model=AddN(1), pip_requirements=["mlflow"])
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["models"]
    assert [f.path for f in client.list_artifacts(run.info.run_id, "models")] == ["models/readme.txt"]
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/inside")
    assert list(loaded.predict(pd.DataFrame({"a": [1]}))["a"]) == [2]
    assert "MLmodel" in [f.path for f in mlflow.artifacts.list_artifacts(inside.model_uri)]


def test_metrics_logged_after_log_model_belong_to_the_model(client, experiment, server):
    # What MLflow's own server shows for the same calls: the run's metrics at the model's step (0), those logged
    # before log_model included; a metric at another step stays the run's alone.
    with mlflow.start_run() as run:
        mlflow.log_metric("before", 1.0)
        info = mlflow.pyfunc.log_model(name="model", python_model=AddN(1), pip_requirements=["mlflow"])
        mlflow.log_metric("acc", 0.9, step=3)
        mlflow.log_metrics({"f1": 0.5, "g": 2.0})
    rid = run.info.run_id
    model = client.get_logged_model(info.model_id)
    got = sorted((m.key, m.value, m.step, m.model_id, m.run_id) for m in model.metrics)
    assert got == [("before", 1.0, 0, info.model_id, rid), ("f1", 0.5, 0, info.model_id, rid),
                   ("g", 2.0, 0, info.model_id, rid)]
    assert set(client.get_run(rid).data.metrics) == {"before", "acc", "f1", "g"}
    # A retried request adds nothing; a model that does not exist is MLflow's 400, and nothing is stored.
    body = {"run_id": rid, "key": "f1", "value": 0.5, "timestamp": 7, "step": 0, "model_id": info.model_id,
            "dataset_name": "val", "dataset_digest": "d1"}
    for _ in range(2):
        assert api(server, "POST", "/api/2.0/mlflow/runs/log-metric", json=body).status_code == 200
    points = [m for m in client.get_logged_model(info.model_id).metrics if m.timestamp == 7]
    assert [(m.key, m.dataset_name, m.dataset_digest) for m in points] == [("f1", "val", "d1")]
    r = api(server, "POST", "/api/2.0/mlflow/runs/log-batch", json={"run_id": rid, "metrics": [
        {"key": "lost", "value": 1, "timestamp": 1, "model_id": "m-missing"}]})
    assert (r.status_code, r.json()["error_code"]) == (400, "BAD_REQUEST")
    assert "lost" not in client.get_run(rid).data.metrics


def test_artifacts_list_by_run(client, experiment, server):
    r = client.create_run(experiment.experiment_id)
    base = f"/api/2.0/mlflow-artifacts/artifacts/{experiment.experiment_id}/{r.info.run_id}/artifacts"
    api(server, "PUT", f"{base}/d/f.txt", data=b"abc")
    out = api(server, "GET", "/api/2.0/mlflow/artifacts/list", params={"run_id": r.info.run_id, "path": "d"}).json()
    assert out["files"] == [{"path": "d/f.txt", "is_dir": False, "file_size": 3}]
    assert out["root_uri"] == r.info.artifact_uri
    top = api(server, "GET", "/ajax-api/2.0/mlflow/artifacts/list", params={"run_id": r.info.run_id}).json()
    assert top["files"] == [{"path": "d", "is_dir": True}]


def test_model_params_are_write_once(client, experiment):
    model = client.create_logged_model(experiment_id=experiment.experiment_id, name="params")
    client.log_model_params(model.model_id, {"lr": "0.1"})
    client.log_model_params(model.model_id, {"lr": "0.1", "depth": "3"})  # the same value again is nothing
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        client.log_model_params(model.model_id, {"lr": "0.2"})
    assert e.value.get_http_status_code() == 400 and "Changing param values" in e.value.message
    assert client.get_logged_model(model.model_id).params == {"lr": "0.1", "depth": "3"}


def test_an_experiments_artifact_location_is_where_its_runs_files_go(client, server, tmp_path):
    """As on MLflow, a run's artifact URI is `<experiment artifact_location>/<run>/artifacts`. The client writes
    a path or file:// location itself; an `mlflow-artifacts:/` one goes through this server into the run's own
    storage (which the native API serves); a location that names another host is refused."""
    from mlflow.exceptions import MlflowException

    local = client.create_experiment(f"local-{tmp_path.name}", artifact_location=f"file://{tmp_path}/store/")
    assert client.get_experiment(local).artifact_location == f"file://{tmp_path}/store/"
    run = client.create_run(local)
    assert run.info.artifact_uri == f"file://{tmp_path}/store/{run.info.run_id}/artifacts"
    client.log_text(run.info.run_id, "on the client's disk", "notes/a.txt")
    assert (tmp_path / "store" / run.info.run_id / "artifacts" / "notes" / "a.txt").read_text() == "on the client's disk"

    proxied = client.create_experiment(f"proxied-{tmp_path.name}", artifact_location="mlflow-artifacts:/team/vision")
    with mlflow.start_run(experiment_id=proxied) as started:
        mlflow.log_text("served", "notes/b.txt")
        model = mlflow.initialize_logged_model(name="m")
    rid = started.info.run_id
    assert started.info.artifact_uri == f"mlflow-artifacts:/team/vision/{rid}/artifacts"
    assert client.get_run(rid).info.artifact_uri == started.info.artifact_uri
    assert [a.path for a in client.list_artifacts(rid, "notes")] == ["notes/b.txt"]
    assert api(server, "GET", f"/api/v1/runs/{rid}/artifacts/notes/b.txt").content == b"served"
    # The run's files are under its experiment's root only.
    assert api(server, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{proxied}/{rid}/artifacts/notes/b.txt").status_code == 404
    found = mlflow.search_runs([proxied], filter_string="attributes.artifact_uri LIKE 'mlflow-artifacts:/team/%'")
    assert list(found["run_id"]) == [rid]
    assert mlflow.get_logged_model(model.model_id).artifact_location == f"mlflow-artifacts:/team/vision/models/{model.model_id}/artifacts"

    # A location with a %-escape: the client puts it into its URLs as written, which arrive decoded.
    escaped = client.create_experiment(f"escaped-{tmp_path.name}", artifact_location="mlflow-artifacts:/my%20team/x")
    with mlflow.start_run(experiment_id=escaped) as started:
        mlflow.log_text("escaped", "notes/c.txt")
    rid = started.info.run_id
    assert started.info.artifact_uri == f"mlflow-artifacts:/my%20team/x/{rid}/artifacts"
    assert [a.path for a in client.list_artifacts(rid, "notes")] == ["notes/c.txt"]
    assert mlflow.artifacts.load_text(f"runs:/{rid}/notes/c.txt") == "escaped"
    assert api(server, "GET", f"/api/v1/runs/{rid}/artifacts/notes/c.txt").content == b"escaped"

    with pytest.raises(MlflowException) as refused:
        client.create_experiment(f"remote-{tmp_path.name}", artifact_location="http://example.com/artifacts")
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE" and "'http' scheme" in refused.value.message
