"""The tracking calls of the mlflow client that the scenario tests leave out, each in its fluent and its
MlflowClient form: experiments through the fluent API, runs' parents, deletion and restore, tables, streams,
run outputs, and the logged-model lifecycle (initialize, params, tags, files, finalize, search, delete)."""

import io
import uuid

import mlflow
import pytest
from mlflow.entities import LoggedModelInput, LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException


def test_fluent_experiment_calls(client):
    name = f"fluent-{uuid.uuid4().hex[:8]}"
    exp_id = mlflow.create_experiment(name, tags={"team": "vision"})
    assert mlflow.get_experiment(exp_id).name == name
    assert mlflow.get_experiment_by_name(name).experiment_id == exp_id
    mlflow.set_experiment(experiment_id=exp_id)
    mlflow.set_experiment_tag("stage", "dev")
    mlflow.set_experiment_tags({"stage": "prod", "owner": "ana"})
    mlflow.delete_experiment_tag("owner")
    assert mlflow.get_experiment(exp_id).tags == {"team": "vision", "stage": "prod"}
    found = mlflow.search_experiments(filter_string=f"name = '{name}' and tags.stage = 'prod'")
    assert [e.experiment_id for e in found] == [exp_id]

    mlflow.delete_experiment(exp_id)
    assert mlflow.get_experiment(exp_id).lifecycle_stage == "deleted"
    assert mlflow.search_experiments(filter_string=f"name = '{name}'") == []
    mlflow.restore_experiment(exp_id)
    assert mlflow.get_experiment_by_name(name).lifecycle_stage == "active"


def test_fluent_run_calls(client, experiment):
    with mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.set_tag("scratch", "x")
            mlflow.delete_tag("scratch")
            uri = mlflow.get_artifact_uri("plots/a.png")
    assert uri == f"{child.info.artifact_uri}/plots/a.png"
    assert mlflow.get_parent_run(child.info.run_id).info.run_id == parent.info.run_id
    assert client.get_parent_run(child.info.run_id).info.run_name == "parent"
    assert mlflow.get_parent_run(parent.info.run_id) is None
    assert "scratch" not in mlflow.get_run(child.info.run_id).data.tags

    mlflow.delete_run(child.info.run_id)
    assert mlflow.get_run(child.info.run_id).info.lifecycle_stage == "deleted"
    mlflow.restore_run(child.info.run_id)
    assert mlflow.get_run(child.info.run_id).info.lifecycle_stage == "active"


def test_tables_and_streams(client, experiment, tmp_path):
    with mlflow.start_run() as first:
        mlflow.log_table({"epoch": [0, 1], "loss": [0.9, 0.5]}, artifact_file="eval.json")
        mlflow.log_table({"epoch": [2], "loss": [0.3]}, artifact_file="eval.json")
        mlflow.log_stream(io.BytesIO(b"\x00\x01binary"), "raw/blob.bin")
    with mlflow.start_run() as second:
        mlflow.log_table({"epoch": [0], "loss": [0.7]}, artifact_file="eval.json")
    client.log_stream(second.info.run_id, io.BytesIO(b"from the client"), "raw/note.txt")

    # A second log_table call to the same file appends its rows.
    both = mlflow.load_table("eval.json", run_ids=[first.info.run_id], extra_columns=["run_id"])
    assert list(both["epoch"]) == [0, 1, 2] and set(both["run_id"]) == {first.info.run_id}
    everything = client.load_table(experiment.experiment_id, "eval.json", extra_columns=["run_id"])
    assert sorted(everything["loss"]) == pytest.approx([0.3, 0.5, 0.7, 0.9])
    blob = mlflow.artifacts.download_artifacts(run_id=first.info.run_id, artifact_path="raw/blob.bin",
                                               dst_path=str(tmp_path))
    assert open(blob, "rb").read() == b"\x00\x01binary"
    note = mlflow.artifacts.load_text(f"runs:/{second.info.run_id}/raw/note.txt")
    assert note == "from the client"


def test_logged_model_lifecycle(client, experiment, tmp_path):
    with mlflow.start_run() as run:
        model = mlflow.initialize_logged_model(name="ranker", params={"depth": "4"}, tags={"kind": "gbdt"},
                                               model_type="tree")
    assert (model.status, model.source_run_id) == (LoggedModelStatus.PENDING, run.info.run_id)
    mlflow.log_model_params({"leaves": "31"}, model_id=model.model_id)
    mlflow.set_logged_model_tags(model.model_id, {"stage": "candidate", "owner": "ana"})
    mlflow.delete_logged_model_tag(model.model_id, "owner")
    client.set_logged_model_tags(model.model_id, {"reviewed": "yes"})
    client.delete_logged_model_tag(model.model_id, "reviewed")

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"w" * 1000)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "model.yaml").write_text("depth: 4\n")
    client.log_model_artifact(model.model_id, str(weights))
    client.log_model_artifacts(model.model_id, str(tmp_path / "cfg"), artifact_path="config")
    listed = {f.path: f.file_size for f in client.list_logged_model_artifacts(model.model_id)}
    assert listed == {"weights.bin": 1000, "config": None}
    assert [f.path for f in client.list_logged_model_artifacts(model.model_id, "config")] == ["config/model.yaml"]

    ready = mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    assert ready.status == LoggedModelStatus.READY
    got = mlflow.get_logged_model(model.model_id)
    assert got.params == {"depth": "4", "leaves": "31"} and got.model_type == "tree"
    assert {k: v for k, v in got.tags.items() if not k.startswith("mlflow.")} == {"kind": "gbdt", "stage": "candidate"}
    found = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id],
                                        filter_string="params.depth = '4' AND tags.stage = 'candidate'",
                                        output_format="list")
    assert [m.model_id for m in found] == [model.model_id]
    frame = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert list(frame["model_id"]) == [model.model_id]

    client.delete_logged_model(model.model_id)
    with pytest.raises(MlflowException) as gone:
        mlflow.get_logged_model(model.model_id)
    assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list") == []


def test_active_model_and_run_inputs_outputs(client, experiment):
    active = mlflow.set_active_model(name="agent")
    assert mlflow.get_active_model_id() == active.model_id
    mlflow.clear_active_model()
    model = mlflow.initialize_logged_model(name="scorer")
    with mlflow.start_run() as run:
        # The fluent log_inputs takes models on Databricks only; the client's takes them anywhere.
        client.log_inputs(run.info.run_id, models=[LoggedModelInput(active.model_id)])
        mlflow.log_outputs(models=[LoggedModelOutput(model.model_id, step=3)])
    other = client.create_run(experiment.experiment_id)
    client.log_inputs(other.info.run_id, models=[LoggedModelInput(model.model_id)])
    client.log_outputs(other.info.run_id, [LoggedModelOutput(active.model_id, step=0)])

    got = client.get_run(run.info.run_id)
    assert [m.model_id for m in got.inputs.model_inputs] == [active.model_id]
    assert [(m.model_id, m.step) for m in got.outputs.model_outputs] == [(model.model_id, 3)]
    got = client.get_run(other.info.run_id)
    assert [m.model_id for m in got.inputs.model_inputs] == [model.model_id]
    assert [(m.model_id, m.step) for m in got.outputs.model_outputs] == [(active.model_id, 0)]
