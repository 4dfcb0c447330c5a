"""`flightlog export tensorboard` read back by TensorBoard's own loader (EventAccumulator / EventMultiplexer) and by
tbparse: every value, step, wall time and run name compared exactly."""

import io
import uuid

import numpy as np
import pytest
from PIL import Image
from tbparse import SummaryReader
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

ALL = {ea.SCALARS: 0, ea.IMAGES: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0}


def f32(v):
    return float(np.float32(v))


def png_bytes():
    buf = io.BytesIO()
    Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def exported(api, tmp_path_factory):
    """An experiment with a run of every kind (and a child), exported; returns (logdir, expectations)."""
    exp = api.post("/api/v1/experiments", {"name": f"tb-{uuid.uuid4().hex[:8]}"})
    run = api.post("/api/v1/runs", {"display_name": "resnet: lr=0.1", "experiment_id": exp["id"]})
    kid = api.post("/api/v1/runs", {"display_name": "fold 1", "experiment_id": exp["id"], "parent_id": run["id"]})
    steps = list(range(0, 200, 2))
    times = [1_700_000_000_123_456 + 1_000_003 * i for i in range(len(steps))]
    values = [1.0 / (i + 1) + 1e-9 for i in range(len(steps))]
    batch = {
        "scalars": [
            {"name": "train/loss", "steps": steps, "times": times, "values": values},
            {"name": "restart", "steps": [0, 1, 2, 1, 2], "times": [1, 2, 3, 4, 5], "values": [1, 2, 3, 4, 5]},
        ],
        "metrics": [
            {"kind": "text", "name": "log", "steps": [0, 5], "times": [10, 20], "values": ["start", "*done*"]},
            {"kind": "list", "name": "per_class", "values": [0.5, 0.25, 0.125], "time": 30},
            {"kind": "table", "name": "preds", "columns": {"p": [0.9, 0.1], "y": ["a", "b"]}, "time": 40},
            {"kind": "histogram", "name": "weights", "limits": [-1.0, 0.0, 1.0], "counts": [2.0, 5.0, 3.0], "step": 7,
             "time": 50},
        ],
    }
    api.post(f"/api/v1/runs/{run['id']}/batch", batch)
    img = png_bytes()
    api.call("POST", f"/api/v1/runs/{run['id']}/images?name=samples&step=3&time=60", raw=img, content_type="image/png")
    api.post(f"/api/v1/runs/{kid['id']}/batch", {"scalars": [{"name": "acc", "steps": [1, 2], "times": [70, 80],
                                                               "values": [0.5, 0.75]}]})
    logdir = tmp_path_factory.mktemp("export")
    api.cli("export", "tensorboard", "--experiment", exp["name"], "--logdir", str(logdir))
    return logdir, {"steps": steps, "times": times, "values": values, "img": img}


def test_run_names_are_folders(exported):
    logdir, _ = exported
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    assert sorted(mux.Runs()) == ["resnet_ lr=0.1", "resnet_ lr=0.1/fold 1"]
    reader = SummaryReader(str(logdir), extra_columns={"dir_name"})
    assert sorted(set(reader.scalars["dir_name"])) == ["resnet_ lr=0.1", "resnet_ lr=0.1/fold 1"]


def test_scalars_exact_with_event_accumulator(exported):
    logdir, want = exported
    acc = ea.EventAccumulator(str(logdir / "resnet_ lr=0.1"), size_guidance=ALL)
    acc.Reload()
    got = acc.Scalars("train/loss")
    assert [e.step for e in got] == want["steps"]
    assert [e.wall_time for e in got] == [t / 1e6 for t in want["times"]]
    assert [e.value for e in got] == [f32(v) for v in want["values"]]
    # A repeated step replaces what was logged at or after it.
    assert [(e.step, e.value) for e in acc.Scalars("restart")] == [(0, 1.0), (1, 4.0), (2, 5.0)]
    assert [(e.step, e.wall_time, e.value) for e in acc.Scalars("per_class")] == [
        (0, 30e-6, 0.5), (1, 30e-6, 0.25), (2, 30e-6, 0.125)]
    assert [(e.step, e.value) for e in acc.Scalars("preds/p")] == [(0, f32(0.9)), (1, f32(0.1))]
    kid = ea.EventAccumulator(str(logdir / "resnet_ lr=0.1" / "fold 1"), size_guidance=ALL)
    kid.Reload()
    assert [(e.step, e.wall_time, e.value) for e in kid.Scalars("acc")] == [(1, 70e-6, 0.5), (2, 80e-6, 0.75)]


def test_scalars_exact_with_tbparse(exported):
    logdir, want = exported
    df = SummaryReader(str(logdir / "resnet_ lr=0.1"), extra_columns={"wall_time"}).scalars
    loss = df[df["tag"] == "train/loss"]
    assert list(loss["step"]) == want["steps"]
    assert list(loss["wall_time"]) == [t / 1e6 for t in want["times"]]
    assert list(loss["value"]) == [np.float32(v) for v in want["values"]]


def test_text_images_histograms(exported):
    logdir, want = exported
    acc = ea.EventAccumulator(str(logdir / "resnet_ lr=0.1"), size_guidance=ALL)
    acc.Reload()
    text = acc.Tensors("log")
    assert [(t.step, t.wall_time, t.tensor_proto.string_val[0].decode()) for t in text] == [
        (0, 10e-6, "start"), (5, 20e-6, "*done*")]
    table = acc.Tensors("preds")[0].tensor_proto.string_val[0].decode()
    assert table == "| p | y |\n|---|---|\n| 0.9 | a |\n| 0.1 | b |"
    (img,) = acc.Images("samples")
    assert (img.step, img.wall_time, img.encoded_image_string, img.width, img.height) == (3, 60e-6, want["img"], 4, 2)
    (h,) = acc.Histograms("weights")
    assert (h.step, h.wall_time) == (7, 50e-6)
    assert list(h.histogram_value.bucket_limit) == [-1.0, 0.0, 1.0]
    assert list(h.histogram_value.bucket) == [2.0, 5.0, 3.0]
    reader = SummaryReader(str(logdir / "resnet_ lr=0.1"))
    assert list(reader.text[reader.text["tag"] == "log"]["value"]) == ["start", "*done*"]


def test_re_export_replaces(api, exported, tmp_path):
    logdir, _ = exported
    before = sorted(p.name for p in logdir.rglob("*tfevents*"))
    exp_name = None
    for e in api.get("/api/v1/experiments")["items"]:
        if e["name"].startswith("tb-"):
            exp_name = e["name"]
    api.cli("export", "tensorboard", "--experiment", exp_name, "--logdir", str(logdir))
    after = sorted(p.name for p in logdir.rglob("*tfevents*"))
    assert len(after) == len(before) == 2
