"""runs/search through `mlflow.search_runs` (pandas and list) and MlflowClient: filters over metrics, params,
tags, attributes and datasets; order_by with NaN/missing last; paging."""

import math

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException


@pytest.fixture()
def runs(client, experiment):
    """Four runs: acc 0.9/adam, 0.7/sgd, NaN/adam, missing/adam."""
    made = {}
    for name, acc, opt in [("a", 0.9, "adam"), ("b", 0.7, "sgd"), ("c", float("nan"), "adam"), ("d", None, "adam")]:
        with mlflow.start_run(run_name=name) as r:
            mlflow.log_param("opt", opt)
            if acc is not None:
                mlflow.log_metric("acc", acc)
            mlflow.set_tag("group", "g1" if name in "ab" else "g2")
        made[name] = r.info.run_id
    return made


def names(df):
    return list(df["tags.mlflow.runName"])


def test_filters(runs, experiment):
    df = mlflow.search_runs(filter_string="metrics.acc > 0.5 and params.opt = 'adam'")
    assert isinstance(df, pd.DataFrame) and names(df) == ["a"]
    assert df.loc[0, "metrics.acc"] == 0.9 and df.loc[0, "status"] == "FINISHED"
    df = mlflow.search_runs(filter_string="params.opt != 'adam'")
    assert names(df) == ["b"]
    df = mlflow.search_runs(filter_string="tags.group = 'g2'", order_by=["attributes.run_name ASC"])
    assert names(df) == ["c", "d"]
    df = mlflow.search_runs(filter_string="tags.`mlflow.runName` ILIKE 'A%'")
    assert names(df) == ["a"]
    df = mlflow.search_runs(filter_string=f"attributes.run_id IN ('{runs['a']}', '{runs['b']}')", order_by=["run_name"])
    assert names(df) == ["a", "b"]
    df = mlflow.search_runs(filter_string=f"run_id NOT IN ('{runs['a']}')")
    assert sorted(names(df)) == ["b", "c", "d"]
    df = mlflow.search_runs(filter_string="attributes.status = 'FINISHED' and params.missing IS NULL")
    assert len(df) == 4
    df = mlflow.search_runs(filter_string="run_name LIKE '%b%'")
    assert names(df) == ["b"]


def test_order_by_nan_and_missing_last(runs):
    for clause in ["metrics.acc DESC", "metrics.acc ASC"]:
        got = mlflow.search_runs(order_by=[clause], output_format="list")
        order = [r.info.run_name for r in got]
        assert order[2:] == ["c", "d"], (clause, order)
    assert [r.info.run_name for r in mlflow.search_runs(order_by=["metrics.acc DESC"], output_format="list")][:2] == ["a", "b"]
    # Default: newest first.
    assert [r.info.run_name for r in mlflow.search_runs(output_format="list")] == ["d", "c", "b", "a"]
    df = mlflow.search_runs(order_by=["metrics.acc ASC"])
    assert math.isnan(df.loc[2, "metrics.acc"])


def test_paging(client, runs, experiment):
    first = client.search_runs([experiment.experiment_id], max_results=3, order_by=["attributes.run_name"])
    assert [r.info.run_name for r in first] == ["a", "b", "c"] and first.token
    rest = client.search_runs([experiment.experiment_id], max_results=3, order_by=["attributes.run_name"], page_token=first.token)
    assert [r.info.run_name for r in rest] == ["d"] and not rest.token


def test_bad_filters_are_400_naming_the_token(runs):
    cases = {
        "metrics.acc > 0.5 OR params.opt = 'adam'": "'OR'",
        "metrics.acc = 'high'": "numeric",
        "bogus.x = '1'": "bogus",
        "params.opt > 'a'": "comparator",
    }
    for f, needle in cases.items():
        with pytest.raises(MlflowException) as e:
            mlflow.search_runs(filter_string=f)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        assert e.value.get_http_status_code() == 400
        assert needle in e.value.message, (f, e.value.message)


def test_dataset_inputs(client, experiment):
    df = pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 0]})
    with mlflow.start_run() as r:
        mlflow.log_input(mlflow.data.from_pandas(df, name="train-set"), context="training")
    run = client.get_run(r.info.run_id)
    assert run.inputs.dataset_inputs[0].dataset.name == "train-set"
    found = mlflow.search_runs(filter_string="datasets.name = 'train-set' and datasets.context = 'training'", output_format="list")
    assert [x.info.run_id for x in found] == [r.info.run_id]
