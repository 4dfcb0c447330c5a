"""Code built on the mlflow client, unchanged: scikit-learn, XGBoost and Keras autologging (params, training
metrics, tags, the training dataset, the logged model, and GridSearchCV's child runs) land in flightlog and read
back both ways."""

import os

# Keras 3 picks its backend once, at import (on a backend that is not installed, importing fails).
os.environ.setdefault("KERAS_BACKEND", "jax")

import mlflow
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from conftest import api


@pytest.fixture()
def autolog(client, experiment):
    mlflow.sklearn.autolog(log_models=True, silent=True)
    yield
    mlflow.sklearn.autolog(disable=True)


def test_sklearn_autolog_fit_is_a_complete_run(autolog, client, server):
    X, y = load_iris(return_X_y=True)
    with mlflow.start_run() as run:
        model = LogisticRegression(max_iter=300, C=0.5).fit(X, y)
    rid = run.info.run_id
    got = client.get_run(rid)
    assert got.info.status == "FINISHED"
    assert got.data.params["C"] == "0.5" and got.data.params["max_iter"] == "300"
    assert got.data.tags["estimator_name"] == "LogisticRegression"
    accuracy = got.data.metrics["training_accuracy_score"]
    assert accuracy == pytest.approx(model.score(X, y))
    [dataset] = got.inputs.dataset_inputs
    assert dataset.tags[0].value == "train" and '"features_shape": [150, 4]' in dataset.dataset.profile
    assert {a.path for a in client.list_artifacts(rid)} >= {"estimator.html", "training_confusion_matrix.png"}

    logged = mlflow.last_logged_model()
    assert logged.source_run_id == rid
    loaded = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    assert np.array_equal(loaded.predict(X), model.predict(X))

    native = api(server, "GET", f"/api/v1/runs/{rid}").json()
    assert native["params"]["solver"] == "lbfgs"
    score = next(m for m in native["metrics"] if m["name"] == "training_accuracy_score")
    assert score["kind"] == "scalar" and score["last_value"] == accuracy


def test_sklearn_autolog_grid_search_logs_child_runs(autolog, client, experiment):
    X, y = load_iris(return_X_y=True)
    with mlflow.start_run() as parent:
        search = GridSearchCV(LogisticRegression(max_iter=300), {"C": [0.1, 1.0, 10.0]}, cv=2).fit(X, y)
    children = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        order_by=["params.C ASC"],
    )
    assert list(children["params.C"]) == ["0.1", "1.0", "10.0"]
    scores = dict(zip(children["params.C"], children["metrics.mean_test_score"]))
    for c, score in zip(search.cv_results_["param_C"], search.cv_results_["mean_test_score"]):
        assert scores[str(c)] == pytest.approx(score)
    best = client.get_run(parent.info.run_id).data
    assert best.params["best_C"] == str(search.best_params_["C"])


def test_xgboost_autolog_with_early_stopping(client, experiment, server):
    """XGBoost autologging, unchanged: per-iteration metrics through the batching logger (which sends the first
    iteration twice), the best iteration's metrics one step after the last, params, and the model."""
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer

    mlflow.xgboost.autolog(silent=True)
    try:
        X, y = load_breast_cancer(return_X_y=True)
        train, val = xgb.DMatrix(X[:400], label=y[:400]), xgb.DMatrix(X[400:], label=y[400:])
        evals = {}
        params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "eval_metric": ["logloss", "error"]}
        with mlflow.start_run() as run:
            booster = xgb.train(params, train, num_boost_round=40, evals=[(train, "train"), (val, "val")],
                                evals_result=evals, early_stopping_rounds=3, verbose_eval=False)
    finally:
        mlflow.xgboost.autolog(disable=True)
    rid = run.info.run_id
    got = client.get_run(rid).data
    assert got.params["max_depth"] == "3" and got.params["early_stopping_rounds"] == "3"
    assert got.metrics["best_iteration"] == booster.best_iteration
    rounds = len(evals["val"]["logloss"])
    assert rounds < 40, "early stopping ended training"
    history = client.get_metric_history(rid, "val-logloss")
    # One point per iteration, then the best iteration's value at the step after the last.
    assert [m.step for m in history] == list(range(rounds + 1))
    assert [m.value for m in history[:rounds]] == pytest.approx(evals["val"]["logloss"])
    assert history[-1].value == pytest.approx(evals["val"]["logloss"][booster.best_iteration])

    # The native API lists points in arrival order, and autologging's asynchronous batches may arrive after the
    # best-iteration point logged when training ends: each step once is what must hold.
    native = api(server, "GET", f"/api/v1/runs/{rid}/metrics/val-logloss").json()
    assert sorted(native["steps"]) == list(range(rounds + 1))
    logged = mlflow.last_logged_model()
    assert logged.source_run_id == rid
    loaded = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    assert np.allclose(loaded.predict(X[400:]), booster.predict(val))


def test_keras_autolog_logs_each_epoch_and_the_model(client, experiment, server):
    """Keras 3 autologging (JAX backend, on the CPU), unchanged: fit's arguments and the optimizer's settings as
    params, every epoch's training and validation metrics as history, the training data as a dataset input, the
    model summary, and a logged model that loads back and predicts as the trained one does."""
    import keras

    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 4)).astype("float32")
    y = (X.sum(axis=1) > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.Dense(1, activation="sigmoid", name="out")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    mlflow.keras.autolog()
    try:
        with mlflow.start_run() as run:
            fit = model.fit(X, y, epochs=3, batch_size=32, validation_split=0.25, verbose=0)
    finally:
        mlflow.keras.autolog(disable=True)
    rid = run.info.run_id
    got = client.get_run(rid)
    assert got.info.status == "FINISHED"
    params = got.data.params
    assert (params["epochs"], params["batch_size"], params["optimizer_name"]) == ("3", "32", "adam")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        history = client.get_metric_history(rid, key)
        assert [m.step for m in history] == [0, 1, 2], key
        assert [m.value for m in history] == pytest.approx(fit.history[key]), key
        assert got.data.metrics[key] == pytest.approx(fit.history[key][-1])

    [dataset] = got.inputs.dataset_inputs
    assert dataset.tags[0].value == "train" and '"features_shape": [256, 4]' in dataset.dataset.profile
    summary = mlflow.artifacts.load_text(f"runs:/{rid}/model_summary.txt")
    assert "hidden" in summary and "out" in summary

    logged = mlflow.last_logged_model()
    assert logged.source_run_id == rid
    assert {m.key for m in logged.metrics} >= {"loss", "val_loss"}
    loaded = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    assert np.allclose(np.ravel(loaded.predict(X[:8])), np.ravel(model.predict(X[:8], verbose=0)))

    native = api(server, "GET", f"/api/v1/runs/{rid}/metrics/val_loss").json()
    assert native["steps"] == [0, 1, 2]
