"""Hugging Face's `MLflowCallback`, unchanged: the real callback with real `TrainingArguments` and a real model
config, sent the events `Trainer` sends it (on_train_begin, on_log, on_save, on_train_end). Trainer's own loop needs
PyTorch, which this suite does not install; the callback, which does all of the logging, does not."""

import json

import mlflow
import pytest
from transformers import BertConfig, TrainerControl, TrainerState, TrainingArguments
from transformers.integrations import MLflowCallback


class TinyModel:
    """What the callback reads of a model: its config (logged as params beside the training arguments)."""

    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def test_trainer_callback_logs_params_metrics_and_checkpoints(client, server, tmp_path, monkeypatch):
    name = f"hf-{tmp_path.name}"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", name)
    monkeypatch.setenv("HF_MLFLOW_LOG_ARTIFACTS", "1")
    args = TrainingArguments(output_dir=str(tmp_path), report_to=["mlflow"], learning_rate=3e-5,
                             num_train_epochs=2, run_name="fine-tune")
    model, state, control = TinyModel(), TrainerState(), TrainerControl()
    state.is_world_process_zero = True
    callback = MLflowCallback()
    callback.on_train_begin(args, state, control, model=model)
    losses = [1.0 / step for step in range(1, 6)]
    for step, loss in enumerate(losses, start=1):
        state.global_step = step
        callback.on_log(args, state, control, model=model,
                        logs={"loss": loss, "learning_rate": 3e-5 * (1 - step / 10), "grad_norm": float(step)})
    checkpoint = tmp_path / "checkpoint-5"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(model.config.to_json_string())
    callback.on_save(args, state, control, model=model)
    callback.on_train_end(args, state, control, model=model)
    assert mlflow.active_run() is None

    [run] = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert (run.info.run_name, run.info.status) == ("fine-tune", "FINISHED")
    params = run.data.params
    # The training arguments and the model config, sent asynchronously in batches of at most 100.
    assert len(params) > 100
    assert params["learning_rate"] == "3e-05" and params["num_train_epochs"] == "2"
    assert params["hidden_size"] == "64" and params["model_type"] == "bert"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == list(zip(range(1, 6), losses))
    assert run.data.metrics["grad_norm"] == 5.0
    assert run.data.metrics["learning_rate"] == pytest.approx(3e-5 * 0.5)

    # on_save logs the checkpoint folder as a pyfunc model's artifacts.
    logged = mlflow.last_logged_model()
    assert (logged.name, logged.source_run_id) == ("checkpoint-5", run.info.run_id)
    back = mlflow.artifacts.download_artifacts(f"models:/{logged.model_id}", dst_path=str(tmp_path / "back"))
    saved = json.loads((tmp_path / "back" / "artifacts" / "checkpoint-5" / "config.json").read_text())
    assert back and BertConfig.from_dict(saved).hidden_size == 64
