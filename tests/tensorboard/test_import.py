"""`flightlog import tensorboard` over files written by real tensorboardX and TensorBoard's own writer, checked
through the native HTTP API against what TensorBoard's loader reads from the same files."""

import uuid

import numpy as np
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboardX import SummaryWriter

ALL = {ea.SCALARS: 0, ea.IMAGES: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0}


def write_tbx(logdir):
    w = SummaryWriter(logdir=str(logdir))
    for i in range(50):
        w.add_scalar("loss", 1.0 / (i + 1), i, walltime=1_700_000_000.5 + i * 0.001)
    w.add_image("img", np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5), 3, walltime=1_700_000_100.0)
    w.add_text("notes", "hello *world*", 4, walltime=1_700_000_101.0)
    w.add_histogram("weights", np.array([0.1, 0.2, 0.2, 0.9, 1.5]), 5, walltime=1_700_000_102.0)
    w.close()


def write_tensor_scalars(logdir):
    """TF2-style f32 tensor scalars and a double-precision one, through TensorBoard's own writer."""
    w = EventFileWriter(str(logdir))
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    for i in range(3):
        f = tensor_pb2.TensorProto(dtype=1, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                   tensor_content=np.float32(i * 0.5).tobytes())
        d = tensor_pb2.TensorProto(dtype=2, tensor_shape=tensor_shape_pb2.TensorShapeProto(), double_val=[i * 0.1])
        s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="f32", tensor=f, metadata=meta),
                                       summary_pb2.Summary.Value(tag="f64", tensor=d, metadata=meta)])
        w.add_event(event_pb2.Event(wall_time=1_700_000_200.0 + i, step=i, summary=s))
    w.close()


def accumulator(path):
    acc = ea.EventAccumulator(str(path), size_guidance=ALL)
    acc.Reload()
    return acc


def test_import_tensorboardx_and_tensorboard_files(api, tmp_path):
    root = tmp_path / "tb"
    write_tbx(root / "run1")
    write_tbx(root / "run1" / "sub")
    write_tensor_scalars(root / "run2")
    exp = f"imp-{uuid.uuid4().hex[:8]}"
    api.cli("import", "tensorboard", str(root), "--experiment", exp)
    exp_id = api.get(f"/api/v1/experiments/by-name/{exp}")["id"]
    runs = {r["display_name"]: r for r in api.get(f"/api/v1/runs?experiment_id={exp_id}")["items"]}
    assert sorted(runs) == ["run1", "run1/sub", "run2"]
    assert runs["run1/sub"]["parent_id"] == runs["run1"]["id"]
    rid = runs["run1"]["id"]
    acc = accumulator(root / "run1")

    loss = api.get(f"/api/v1/runs/{rid}/metrics/loss")
    want = acc.Scalars("loss")
    assert loss["steps"] == [e.step for e in want]
    assert loss["values"] == [e.value for e in want]
    assert loss["times"] == [round(e.wall_time * 1e6) for e in want]

    img = api.get(f"/api/v1/runs/{rid}/metrics/img")["records"]
    assert [r["step"] for r in img] == [3]
    data = api.call("GET", f"/api/v1/runs/{rid}/artifacts/{img[0]['value']['path']}")
    assert data == acc.Images("img")[0].encoded_image_string

    notes = api.get(f"/api/v1/runs/{rid}/metrics/notes/text_summary")["records"]  # tensorboardX names it so
    assert [(r["step"], r["value"]) for r in notes] == [(4, "hello *world*")]

    hist = api.get(f"/api/v1/runs/{rid}/metrics/weights")["records"]
    h = acc.Histograms("weights")[0].histogram_value
    assert hist[0]["step"] == 5
    assert hist[0]["value"]["limits"] == list(h.bucket_limit)
    assert hist[0]["value"]["counts"] == list(h.bucket)

    r2 = runs["run2"]["id"]
    assert api.get(f"/api/v1/runs/{r2}/metrics/f32")["values"] == [0.0, 0.5, 1.0]
    assert api.get(f"/api/v1/runs/{r2}/metrics/f64")["values"] == [0.0, 0.1, 0.2]

    # Importing again stores nothing twice.
    api.cli("import", "tensorboard", str(root), "--experiment", exp)
    assert len(api.get(f"/api/v1/runs/{rid}/metrics/loss")["values"]) == 50
    assert len(api.get(f"/api/v1/runs/{rid}/metrics/img")["records"]) == 1


def test_a_file_still_being_written(api, tmp_path):
    """A file whose last record is half written: what is complete is imported, the rest on the next import."""
    root = tmp_path / "live"
    w = SummaryWriter(logdir=str(root))
    for i in range(10):
        w.add_scalar("x", float(i), i)
    w.close()
    (path,) = list(root.glob("*tfevents*"))
    full = path.read_bytes()
    path.write_bytes(full[:-7])  # as if the last record were half written
    exp = f"live-{uuid.uuid4().hex[:8]}"
    p = api.cli("import", "tensorboard", str(root), "--experiment", exp)
    assert "file ends inside a record" in p.stderr
    exp_id = api.get(f"/api/v1/experiments/by-name/{exp}")["id"]
    (run,) = api.get(f"/api/v1/runs?experiment_id={exp_id}")["items"]
    assert api.get(f"/api/v1/runs/{run['id']}/metrics/x")["steps"] == list(range(9))
    path.write_bytes(full)
    api.cli("import", "tensorboard", str(root), "--experiment", exp)
    assert api.get(f"/api/v1/runs/{run['id']}/metrics/x")["steps"] == list(range(10))


def test_hyperparameters_become_params(api, tmp_path):
    """Hyperparameters logged with tensorboardX's `add_hparams` (which writes them, with the metrics they
    scored, into a sub-folder of their own) and with TensorBoard's own hparams API become the runs' params, as
    TensorBoard's HParams dashboard shows them; importing again changes nothing."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    root = tmp_path / "hp"
    w = SummaryWriter(logdir=str(root / "trial"))
    w.add_scalar("loss", 0.5, 0)
    hparams = {"lr": 0.01, "batch": 32, "optimizer": "adam", "augment": True}
    w.add_hparams(hparams, {"hparam/accuracy": 0.75}, name="session")
    w.close()
    fw = EventFileWriter(str(root / "tf"))
    fw.add_event(event_pb2.Event(wall_time=1_700_000_000.0, step=0, summary=hp.hparams_pb({"units": 64, "act": "relu"})))
    fw.close()
    exp = f"hp-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        p = api.cli("import", "tensorboard", str(root), "--experiment", exp)
        assert "hparams: " not in p.stderr, p.stderr
        exp_id = api.get(f"/api/v1/experiments/by-name/{exp}")["id"]
        runs = {r["display_name"]: r for r in api.get(f"/api/v1/runs?experiment_id={exp_id}")["items"]}
        assert sorted(runs) == ["tf", "trial", "trial/session"]
        session = api.get(f"/api/v1/runs/{runs['trial/session']['id']}")
        assert session["params"] == {"lr": "0.01", "batch": "32", "optimizer": "adam", "augment": "True"}
        assert api.get(f"/api/v1/runs/{session['id']}/metrics/hparam/accuracy")["values"] == [0.75]
        assert api.get(f"/api/v1/runs/{runs['tf']['id']}")["params"] == {"units": "64", "act": "relu"}
        assert api.get(f"/api/v1/runs/{runs['trial']['id']}")["params"] == {}
