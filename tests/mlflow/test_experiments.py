"""Experiments through MlflowClient and the fluent API, plus the wire basics (version, server-info, errors)."""

import uuid

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from conftest import api


def name():
    return f"e-{uuid.uuid4().hex[:10]}"


def test_version_server_info_and_default_experiment(client, server):
    assert api(server, "GET", "/version").text == "3.17.2"
    info = api(server, "GET", "/api/3.0/mlflow/server-info").json()
    assert info["multipart_uploads_enabled"] is False
    default = client.get_experiment("0")
    assert default.name == "Default" and default.lifecycle_stage == "active"
    assert default.artifact_location == "mlflow-artifacts:/0"
    assert client.get_experiment_by_name(name()) is None


def test_set_experiment_creates_then_reuses(client):
    n = name()
    first = mlflow.set_experiment(n)
    again = mlflow.set_experiment(n)
    assert first.experiment_id == again.experiment_id
    assert client.get_experiment_by_name(n).experiment_id == first.experiment_id


def test_experiment_lifecycle_and_tags(client):
    n = name()
    eid = client.create_experiment(n, tags={"team": "vision"})
    exp = client.get_experiment(eid)
    assert exp.name == n and exp.tags == {"team": "vision"}
    client.set_experiment_tag(eid, "stage", "dev")
    client.delete_experiment_tag(eid, "team")
    assert client.get_experiment(eid).tags == {"stage": "dev"}
    client.rename_experiment(eid, n + "-renamed")
    assert client.get_experiment(eid).name == n + "-renamed"
    client.delete_experiment(eid)
    assert client.get_experiment(eid).lifecycle_stage == "deleted"
    # A deleted experiment takes no rename (MLflow's server refuses with a 500 the client retries; a 400 here).
    with pytest.raises(MlflowException) as e:
        client.rename_experiment(eid, n + "-while-deleted")
    assert e.value.get_http_status_code() == 400 and "restore it" in e.value.message
    assert client.get_experiment(eid).name == n + "-renamed"
    deleted = client.search_experiments(view_type=mlflow.entities.ViewType.DELETED_ONLY)
    assert eid in [e.experiment_id for e in deleted]
    active = client.search_experiments()
    assert eid not in [e.experiment_id for e in active]
    client.restore_experiment(eid)
    assert client.get_experiment(eid).lifecycle_stage == "active"


def test_duplicate_and_missing_experiments_use_mlflow_codes(client):
    n = name()
    client.create_experiment(n)
    with pytest.raises(MlflowException) as e:
        client.create_experiment(n)
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert e.value.get_http_status_code() == 400
    with pytest.raises(MlflowException) as e:
        client.get_experiment("987654")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert e.value.get_http_status_code() == 404


def test_search_experiments_filter_order_and_paging(client):
    prefix = f"s-{uuid.uuid4().hex[:8]}"
    ids = [client.create_experiment(f"{prefix}-{i}", tags={"i": str(i)}) for i in range(3)]
    found = client.search_experiments(filter_string=f"name LIKE '{prefix}%'", order_by=["name DESC"])
    assert [e.experiment_id for e in found] == ids[::-1]
    found = client.search_experiments(filter_string=f"name LIKE '{prefix}%' AND tags.i = '1'")
    assert [e.experiment_id for e in found] == [ids[1]]
    page = client.search_experiments(
        filter_string=f"name ILIKE '{prefix.upper()}%'", order_by=["name ASC"], max_results=2
    )
    assert [e.experiment_id for e in page] == ids[:2] and page.token
    rest = client.search_experiments(
        filter_string=f"name ILIKE '{prefix.upper()}%'", order_by=["name ASC"], max_results=2, page_token=page.token
    )
    assert [e.experiment_id for e in rest] == ids[2:] and not rest.token
    # Default order: newest first.
    found = client.search_experiments(filter_string=f"name LIKE '{prefix}%'")
    assert [e.experiment_id for e in found] == ids[::-1]


def test_bad_filter_and_unknown_endpoint(client, server):
    with pytest.raises(MlflowException) as e:
        client.search_experiments(filter_string="name = 'a' OR name = 'b'")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "'OR'" in e.value.message
    r = api(server, "GET", "/api/2.0/mlflow/nope/nothing")
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    r = api(server, "GET", "/ajax-api/2.0/mlflow/experiments/get", params={"experiment_id": "0"})
    assert r.json()["experiment"]["name"] == "Default"
