"""Every method of the SDK against the real server and in local mode, reading every value back."""

from __future__ import annotations

import logging
import math
import os
import uuid

import pytest

import flightlog
from flightlog import Experiment, Run, Workspace
from flightlog.errors import (
    ConflictError,
    FlightlogError,
    IllegalTransitionError,
    InvalidArgumentError,
    InvalidPathError,
    NotFoundError,
    TooLargeError,
)


def test_scalar_series_steps_and_single_values(exp):
    run = exp.start_logging(display_name="scalars", description="a run")
    for i in range(100):
        run.log("loss", 1.0 / (i + 1), step=i * 10)
    run.log("acc", 0.93)
    run.log("int_metric", 7)
    run.log("flag", True)
    assert run.flush()
    m = run.get_metrics()
    assert m["loss"] == [1.0 / (i + 1) for i in range(100)]
    assert m["acc"] == 0.93
    assert m["int_metric"] == 7.0
    assert m["flag"] == 1.0
    steps, times, values = run.workspace._client.read_scalars(run.id, "loss")
    assert steps == [i * 10 for i in range(100)]
    assert all(t > 1_600_000_000_000_000 for t in times)
    assert run.get_metrics("acc") == {"acc": 0.93}
    assert run.get_metrics("nope") == {}


def test_descriptions_are_kept(exp):
    run = exp.start_logging()
    run.log("described", 1.0, description="the loss of the thing")
    run.log("described", 2.0)
    run.log("text_d", "hello", description="a text series")
    run.log_list("list_d", [1.0], description="a list")
    run.log_row("row_d", description="rows", a=1)
    run.log_table("table_d", {"a": [1]}, description="a table")
    run.flush()
    infos = {m["name"]: m for m in run.workspace._call("list_metrics", run=run.id)}
    assert infos["described"]["description"] == "the loss of the thing"
    assert infos["text_d"]["description"] == "a text series"
    assert infos["list_d"]["description"] == "a list"
    assert infos["row_d"]["description"] == "rows"
    assert infos["table_d"]["description"] == "a table"
    assert run.get_metrics("described") == {"described": [1.0, 2.0]}


def test_default_steps_count_up(exp):
    run = exp.start_logging()
    for v in (3.0, 4.0, 5.0):
        run.log("x", v)
    run.flush()
    steps, _, values = run.workspace._client.read_scalars(run.id, "x")
    assert steps == [0, 1, 2] and values == [3.0, 4.0, 5.0]


def test_nan_and_infinities_kept(exp):
    run = exp.start_logging()
    for v in (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, 5e-324):
        run.log("weird", v)
    run.log_list("weird_list", [math.nan, math.inf, -math.inf, 1.5])
    run.log_row("weird_row", a=math.nan, b=math.inf)
    run.log_table("weird_table", {"a": [math.nan, -math.inf], "b": [1, 2]})
    run.flush()
    m = run.get_metrics()
    w = m["weird"]
    assert math.isnan(w[0]) and w[1] == math.inf and w[2] == -math.inf and w[3:] == [0.0, -0.0, 1e308, 5e-324]
    assert math.copysign(1, w[4]) == -1
    wl = m["weird_list"]
    assert math.isnan(wl[0]) and wl[1:] == [math.inf, -math.inf, 1.5]
    assert math.isnan(m["weird_row"]["a"][0]) and m["weird_row"]["b"] == [math.inf]
    assert math.isnan(m["weird_table"]["a"][0]) and m["weird_table"]["a"][1] == -math.inf


def test_unicode_names_and_text(exp):
    run = exp.start_logging(display_name="ünïcødé 実験 🚀")
    run.log("損失/train é", 0.5)
    run.log("メッセージ", "こんにちは 🌍")
    run.log("メッセージ", "second")
    run.log_row("表", 列="値", число=1)
    run.tag("ключ", "значение")
    run.add_properties({"属性": "✓"})
    run.flush()
    m = run.get_metrics()
    assert m["損失/train é"] == 0.5
    assert m["メッセージ"] == ["こんにちは 🌍", "second"]
    assert m["表"] == {"列": ["値"], "число": [1]}
    assert run.get_tags()["ключ"] == "значение"
    assert run.get_properties() == {"属性": "✓"}
    assert Run.get(run.workspace, run.id).display_name == "ünïcødé 実験 🚀"


def test_log_list_row_table(exp):
    np = pytest.importorskip("numpy")
    run = exp.start_logging()
    run.log_list("lr", [0.1, 0.05, 0.01], description="schedule")
    run.log_list("arr", np.arange(4, dtype=np.float32))
    for i in range(3):
        run.log_row("roc", fpr=i / 10, tpr=i / 5, label=f"p{i}")
    run.log_row("mixed", a=1, b="x", c=None, d=True)
    run.log_table("pr", {"precision": [0.9, 0.8, 0.7], "recall": np.array([0.1, 0.5, 0.9])})
    run.log_table("pr", {"precision": [0.6], "recall": [0.95]})
    run.flush()
    m = run.get_metrics()
    assert m["lr"] == [0.1, 0.05, 0.01]
    assert m["arr"] == [0.0, 1.0, 2.0, 3.0]
    assert m["roc"] == {"fpr": [0.0, 0.1, 0.2], "tpr": [0.0, 0.2, 0.4], "label": ["p0", "p1", "p2"]}
    assert m["mixed"] == {"a": [1], "b": ["x"], "c": [None], "d": [True]}
    assert m["pr"] == {"precision": [0.9, 0.8, 0.7, 0.6], "recall": [0.1, 0.5, 0.9, 0.95]}
    run.log_list("lr", [1.0])
    run.flush()
    assert run.get_metrics("lr")["lr"] == [[0.1, 0.05, 0.01], [1.0]]


def test_large_table_100k_rows(exp):
    run = exp.start_logging()
    n = 100_000
    table = {"step": list(range(n)), "value": [i * 0.5 for i in range(n)], "name": [f"r{i % 7}" for i in range(n)]}
    run.log_table("big", table)
    assert run.flush(120)
    got = run.get_metrics("big")["big"]
    assert got["step"] == table["step"]
    assert got["value"] == table["value"]
    assert got["name"] == table["name"]


def test_log_image_file_and_figure(exp, tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    run = exp.start_logging()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1, 4, 9])
    run.log_image("curve", plot=fig, description="a curve")
    plt.close(fig)
    png = tmp_path / "dot.png"
    fig2 = plt.figure()
    fig2.savefig(png)
    plt.close(fig2)
    run.log_image("file_image", path=str(png), step=3)
    run.log_image("file_image", path=str(png), step=4)
    assert run.flush()
    m = run.get_metrics()
    assert isinstance(m["curve"], str) and m["curve"].endswith(".png")
    assert isinstance(m["file_image"], list) and len(m["file_image"]) == 2
    files = run.get_file_names()
    assert m["curve"] in files and all(p in files for p in m["file_image"])
    out = run.download_file(m["curve"], str(tmp_path / "back.png"))
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_log_image_bad_input(exp, tmp_path):
    run = exp.start_logging()
    with pytest.raises(ValueError, match="exactly one"):
        run.log_image("x")
    with pytest.raises(ValueError, match="exactly one"):
        run.log_image("x", path="a.png", plot=object())
    not_image = tmp_path / "x.png"
    not_image.write_text("hello")
    with pytest.raises(ValueError, match="not a PNG"):
        run.log_image("x", path=str(not_image))
    with pytest.raises(TypeError):
        run.log_image("x", plot=42)
    with pytest.raises(FileNotFoundError):
        run.log_image("x", path=str(tmp_path / "missing.png"))


def test_oversized_image_and_descriptions_raise_at_the_call(exp, tmp_path):
    """What the server would refuse raises at once; logged before, it was dropped later (a big image even
    blocked the run's delivery for good: the server closes the connection mid-body, which looked like an
    outage). Data logged after the refused calls still arrives."""
    run = exp.start_logging()
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(64 * 1024 * 1024 + 1)
    with pytest.raises(TooLargeError, match="image is too large: 67108865 bytes"):
        run.log_image("big", path=str(big))
    long = "d" * (256 * 1024 + 1)
    with pytest.raises(InvalidArgumentError, match="description"):
        run.log_row("row", description=long, a=1)
    with pytest.raises(InvalidArgumentError, match="description"):
        run.log_list("lst", [1, 2], description=long)
    with pytest.raises(InvalidArgumentError, match="description"):
        run.log("txt", "hello", description=long)
    run.log("after", 1.0)
    assert run.flush(60)
    assert run.get_metrics() == {"after": 1.0}
    assert run.get_details()["delivery"]["rejected_entries"] == 0


def test_writes_no_request_could_carry_raise_and_big_ones_are_sent_apart(exp):
    """A list of 4M values (about 76 MB as JSON) raises at the call: queued, it made a request over the
    server's 64 MiB limit, which was retried for good and held back everything logged after it. Eighty text
    points of nearly 1 MiB each, valid one by one, were sealed into one such request; they are sent apart."""
    run = exp.start_logging()
    with pytest.raises(TooLargeError, match=r"list 'per_sample' \(as JSON; log it in parts"):
        run.log_list("per_sample", [1.0 / 3.0] * 4_000_000)
    sample = "y" * (1024 * 1024 - 16)
    for _ in range(80):
        run.log("generated", sample)
    run.log("loss", 0.5)
    assert run.flush(120)
    m = run.get_metrics()
    assert m["loss"] == 0.5
    assert len(m["generated"]) == 80 and m["generated"][-1] == sample
    assert run.get_details()["delivery"]["rejected_entries"] == 0


def test_text_subclasses_are_logged_as_their_text(exp):
    import enum

    class Phase(str, enum.Enum):
        TRAIN = "train"

    class Label(str):
        pass

    run = exp.start_logging()
    run.log("phase", Phase.TRAIN)
    run.log("label", Label("cat"))
    assert run.flush()
    assert run.get_metrics() == {"phase": "train", "label": "cat"}


def test_flush_of_nan_and_a_zero_row_table(exp):
    run = exp.start_logging()
    with pytest.raises(InvalidArgumentError, match="NaN"):
        run.flush(float("nan"))
    run.log_table("t0", {"a": []})
    assert run.flush(60)
    assert run.get_details()["delivery"]["pending_points"] == 0


def test_create_children(exp):
    parent = exp.start_logging()
    kids = parent.create_children(3)
    assert len(kids) == 3 and len({k.id for k in kids}) == 3
    assert all(k.parent.id == parent.id and k.get_status() == "NotStarted" for k in kids)
    kids[0].start()
    kids[0].start()  # already Running: stays so
    kids[1].log("x", 1.0)  # logging needs no start
    kids[2].complete()
    assert [k.get_status() for k in kids] == ["Running", "NotStarted", "Completed"]
    assert kids[1].get_metrics() == {"x": 1.0}
    with pytest.raises(IllegalTransitionError):
        kids[2].start()
    tagged = parent.create_children(tag_key="fold", tag_values=[0, 1])
    assert [k.get_tags() for k in tagged] == [{"fold": "0"}, {"fold": "1"}]
    assert [k.id for k in parent.get_children()] == [k.id for k in kids + tagged]
    assert parent.create_children(0) == []
    with pytest.raises(ValueError, match="count"):
        parent.create_children(-1)
    with pytest.raises(ValueError, match="together"):
        parent.create_children(tag_key="fold")
    with pytest.raises(ValueError, match="count=3 but 2"):
        parent.create_children(3, tag_key="fold", tag_values=["a", "b"])


def test_a_handle_that_did_not_log_still_reads_what_this_process_logged(exp):
    run = exp.start_logging()
    with run.child_run() as child:
        for i in range(50):
            run.log("loss", float(i), step=i)
            child.log("acc", float(i), step=i)
        # No flush: these handles share the process's client with the ones that logged.
        again = Run.get(exp.workspace, run.id)
        assert again.get_metrics("loss")["loss"] == [float(i) for i in range(50)]
        assert again.get_children()[0].get_metrics()["acc"] == [float(i) for i in range(50)]


def test_with_block_ends_by_how_the_block_ended(exp):
    """sys.exit(0) inside the block is a normal end (it failed the run), Ctrl-C a cancel."""
    with pytest.raises(SystemExit):
        with exp.start_logging() as ok:
            raise SystemExit(0)
    assert ok.get_status() == "Completed"
    with pytest.raises(SystemExit):
        with exp.start_logging() as bad:
            raise SystemExit(3)
    assert bad.get_status() == "Failed"
    with pytest.raises(KeyboardInterrupt):
        with exp.start_logging() as stopped:
            raise KeyboardInterrupt
    assert stopped.get_status() == "Canceled"


def test_with_block_of_a_run_ended_elsewhere_keeps_that_end_and_the_blocks_error(exp):
    run = exp.start_logging()
    with run:
        Run.get(exp.workspace, run.id).cancel()
    assert run.get_status() == "Canceled"
    other = exp.start_logging()
    with pytest.raises(KeyError, match="the user's own"):
        with other:
            Run.get(exp.workspace, other.id).cancel()
            raise KeyError("the user's own")
    assert other.get_status() == "Canceled"


def test_confusion_matrix_and_accuracy_table(exp):
    run = exp.start_logging()
    cm = {"class_labels": ["cat", "dog"], "matrix": [[5, 1], [2, 7]]}
    run.log_confusion_matrix("cm", cm)
    run.log_confusion_matrix("cm_wrapped", {"schema_type": "confusion_matrix", "schema_version": "1.0.0", "data": cm})
    acc = {
        "class_labels": ["0", "1"],
        "probability_thresholds": [0.0, 0.5, 1.0],
        "percentile_thresholds": [0.0, 50.0, 100.0],
        "probability_tables": [[[1, 2, 3, 4]]],
        "percentile_tables": [[[4, 3, 2, 1]]],
    }
    run.log_accuracy_table("acc_table", acc)
    run.log_residuals("res", {"bin_edges": [0, 1, 2], "bin_counts": [3, 4]})
    run.flush()
    m = run.get_metrics()
    assert m["cm"] == cm and m["cm_wrapped"] == cm
    assert m["acc_table"] == acc
    assert m["res"] == {"bin_edges": [0, 1, 2], "bin_counts": [3, 4]}
    with pytest.raises(ValueError, match="2x2"):
        run.log_confusion_matrix("bad", {"class_labels": ["a", "b"], "matrix": [[1, 2, 3]]})
    with pytest.raises(ValueError):
        run.log_confusion_matrix("bad", {"matrix": []})


def test_child_runs(exp):
    parent = exp.start_logging(display_name="parent")
    with parent.child_run("child-a") as a:
        a.log("x", 1.0)
        with a.child_run() as grandchild:
            grandchild.log("y", 2.0)
    with pytest.raises(RuntimeError):
        with parent.child_run("child-b") as b:
            raise RuntimeError("boom in child")
    assert a.get_status() == "Completed" and grandchild.get_status() == "Completed"
    assert b.get_status() == "Failed"
    assert "boom in child" in b.get_details()["error"]["message"]
    assert parent.get_status() == "Running"  # parent and child status are independent
    kids = parent.get_children()
    assert [k.display_name for k in kids] == ["child-a", "child-b"]
    assert {k.id for k in parent.get_children(recursive=True)} == {a.id, b.id, grandchild.id}
    assert a.parent.id == parent.id and grandchild.parent.id == a.id and parent.parent is None
    assert a.experiment.id == exp.id
    rec = parent.get_metrics(recursive=True)
    assert rec[a.id] == {"x": 1.0} and rec[grandchild.id] == {"y": 2.0} and rec[parent.id] == {}
    assert [r.id for r in exp.get_runs()] == [parent.id]
    assert {r.id for r in exp.get_runs(include_children=True)} == {parent.id, a.id, b.id, grandchild.id}


def test_tags_and_properties(exp):
    run = exp.start_logging()
    run.tag("flag")
    run.tag("model", "cnn")
    run.set_tags({"lr": 0.1, "opt": "adam"})
    assert run.get_tags() == {"flag": "", "model": "cnn", "lr": "0.1", "opt": "adam"}
    run.tag("model", "rnn")  # tags are mutable
    run.remove_tags(["flag", "lr", "unknown"])
    assert run.get_tags() == {"model": "rnn", "opt": "adam"}
    run.add_properties({"dataset": "mnist", "seed": 1})
    run.add_properties({"dataset": "mnist"})  # same value: fine
    with pytest.raises(ConflictError, match="dataset") as e:
        run.add_properties({"dataset": "cifar", "other": "x"})
    assert isinstance(e.value, ValueError)
    assert run.get_properties() == {"dataset": "mnist", "seed": "1"}  # nothing of the rejected patch stored
    other = exp.start_logging()
    other.tag("model", "cnn")
    assert {r.id for r in exp.get_runs(tags="model")} == {run.id, other.id}
    assert [r.id for r in exp.get_runs(tags={"model": "cnn"})] == [other.id]
    assert [r.id for r in exp.get_runs(properties={"dataset": "mnist"})] == [run.id]
    other.complete()
    assert [r.id for r in exp.get_runs(status="Completed")] == [other.id]
    assert {r.id for r in exp.get_runs(status=["Completed", "Running"])} == {run.id, other.id}


def test_upload_folder_follows_linked_folders_not_into_cycles_and_skips_dangling_links(exp, tmp_path):
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "real" / "r.txt").write_text("r")
    (src / "z.txt").write_text("z")
    os.symlink(src / "real", src / "linked")  # a linked folder: uploaded under its link name too
    os.symlink(src, src / "real" / "loop")  # a cycle: not followed back in
    os.symlink(tmp_path / "nowhere", src / "c-cache")
    run = exp.start_logging()
    with pytest.warns(UserWarning, match="1 link.*c-cache"):
        run.upload_folder("up", str(src))
    assert run.get_file_names() == ["up/a.txt", "up/linked/r.txt", "up/real/r.txt", "up/z.txt"]


def test_files(exp, tmp_path):
    run = exp.start_logging()
    f = tmp_path / "model.bin"
    payload = os.urandom(300_000)
    f.write_bytes(payload)
    info = run.upload_file("outputs/model.bin", str(f))
    assert info["path"] == "outputs/model.bin" and info["size"] == len(payload)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("A")
    (folder / "sub" / "b.txt").write_text("B ü")
    run.upload_folder("logs", str(folder))
    assert run.get_file_names() == ["logs/a.txt", "logs/sub/b.txt", "outputs/model.bin"]
    out = run.download_file("outputs/model.bin", str(tmp_path / "dl"))
    assert open(out, "rb").read() == payload
    (tmp_path / "into").mkdir()
    out2 = run.download_file("logs/a.txt", str(tmp_path / "into"))
    assert out2 == str(tmp_path / "into" / "a.txt") and open(out2).read() == "A"
    got = run.download_files("logs", str(tmp_path / "all"))
    assert sorted(os.path.relpath(p, tmp_path / "all") for p in got) == ["logs/a.txt", "logs/sub/b.txt"]
    got2 = run.download_files("logs", str(tmp_path / "flat"), append_prefix=False)
    assert open(tmp_path / "flat" / "sub" / "b.txt", encoding="utf-8").read() == "B ü"
    assert len(got2) == 2
    with pytest.raises(InvalidPathError):
        run.upload_file("../escape.txt", str(f))
    with pytest.raises(InvalidPathError):
        run.upload_file("/abs.txt", str(f))
    with pytest.raises(FileNotFoundError):
        run.upload_file("x", str(tmp_path / "missing"))
    with pytest.raises(NotFoundError):
        run.download_file("nope.txt", str(tmp_path / "nope"))


def test_snapshot_directory(exp, tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print('hi')")
    (src / "pkg" / "m.py").write_text("x = 1")
    (src / "big.ckpt").write_text("ignored")
    (src / ".gitignore").write_text("*.ckpt\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_text("c")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    os.symlink(secret, src / "creds.txt")
    os.symlink(tmp_path, src / "outside")
    os.symlink(src / "gone.ckpt2", src / "latest.ckpt2")
    run = exp.start_logging(snapshot_directory=str(src))
    # Links are left out, as in submit's snapshot: nothing outside the folder is taken.
    assert run.get_file_names() == ["snapshot/.gitignore", "snapshot/pkg/m.py", "snapshot/train.py"]
    # A snapshot that cannot be taken raises before any run exists.
    before = {r.id for r in exp.get_runs()}
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        exp.start_logging(snapshot_directory=str(tmp_path / "nope"))
    many = tmp_path / "many"
    many.mkdir()
    for i in range(2001):
        (many / f"f{i}.py").write_text("x")
    with pytest.raises(ValueError, match=r"2001 files \(limit 2000\)"):
        exp.start_logging(snapshot_directory=str(many))
    assert {r.id for r in exp.get_runs()} == before


def test_lifecycle(exp):
    run = exp.start_logging()
    assert run.get_status() == "Running"
    run.log("x", 1.0)
    run.complete()
    assert run.get_status() == "Completed"
    assert run.get_metrics() == {"x": 1.0}  # complete() delivered everything first
    with pytest.raises(IllegalTransitionError):
        run.fail("too late")
    r2 = exp.start_logging()
    r2.fail("it broke", error_code="E42")
    d = r2.get_details()
    assert d["status"] == "Failed" and d["error"]["message"] == "it broke" and d["error"]["code"] == "E42"
    assert d["endTimeUtc"] is not None
    r3 = exp.start_logging()
    r3.cancel()
    assert r3.get_status() == "Canceled"
    with exp.start_logging() as r4:
        r4.log("y", 2.0)
    assert r4.get_status() == "Completed" and r4.get_metrics() == {"y": 2.0}
    with pytest.raises(KeyError):
        with exp.start_logging() as r5:
            r5.log("z", 3.0)
            raise KeyError("missing thing")
    d5 = r5.get_details()
    assert d5["status"] == "Failed" and "KeyError" in d5["error"]["message"] and "missing thing" in d5["error"]["message"]
    assert "Traceback" in d5["error"]["details"]
    assert r5.get_metrics() == {"z": 3.0}
    with exp.start_logging() as r6:
        r6.cancel()  # ended inside the block: left as it is
    assert r6.get_status() == "Canceled"


def test_identity_and_details(exp):
    run = exp.start_logging(display_name="first", description="desc")
    assert len(run.id) == 32 and run.display_name == "first" and run.description == "desc"
    run.display_name = "renamed"
    run.description = "new desc"
    again = Run.get(exp.workspace, run.id)
    assert again.display_name == "renamed" and again.description == "new desc" and again == run
    assert run.experiment.name == exp.name
    d = run.get_details()
    for key in ("runId", "displayName", "status", "startTimeUtc", "tags", "properties", "delivery", "user", "host"):
        assert key in d
    assert d["runId"] == run.id and d["experimentId"] == exp.id
    assert d["delivery"]["last_error"] is None
    with pytest.raises(NotFoundError):
        Run.get(exp.workspace, uuid.uuid4().hex)
    with pytest.raises(InvalidArgumentError):
        Run.get(exp.workspace, "not-a-run-id")
    with pytest.raises(TypeError):
        Run()
    with pytest.raises(TypeError):
        run.display_name = 5
    html = run._repr_html_()
    assert "Running" in html and run.id in html and exp.name in html
    if exp.workspace.uri:
        assert f"{exp.workspace.uri}/runs/{run.id}" in html
    else:
        assert "flightlog server --data" in html


def test_experiments(ws):
    name = f"exp-{uuid.uuid4().hex[:6]}"
    a = Experiment(ws, name)
    b = Experiment(ws, name)  # get, not create again
    assert a.id == b.id and a.name == name and a == b
    assert name in [e.name for e in ws.list_experiments()]
    assert name in a._repr_html_()
    run = a.start_logging()
    assert [r.id for r in Run.list(a)] == [run.id]
    assert Run.list(a, status="Completed") == []
    with pytest.raises(ValueError):
        Experiment(ws, "")
    with pytest.raises(TypeError):
        Experiment(ws, 3)


def test_capture_logging(exp):
    run = exp.start_logging()
    logger = logging.getLogger(f"train.{uuid.uuid4().hex[:6]}")
    run.capture_logging(logger)
    logger.info("epoch %d done", 1)
    logger.debug("not captured")
    try:
        1 / 0
    except ZeroDivisionError:
        logger.exception("it failed")
    run.complete()
    logger.warning("after the run ended")  # handler removed
    text = run.get_logs("python")
    assert "INFO" in text and "epoch 1 done" in text and logger.name in text
    assert "not captured" not in text and "after the run ended" not in text
    assert "ZeroDivisionError" in text and "Traceback" in text
    assert run.get_details()["logFiles"]["python"] == len(text.encode("utf-8"))
    assert not [h for h in logger.handlers if h.__class__.__name__ == "RunLogHandler"]


def test_a_log_record_over_one_append_is_kept_in_pieces(exp, capsys):
    """A record over the 16 MiB one append may carry was refused, and logging's handleError printed all of
    it to stderr; it is sent in pieces."""
    run = exp.start_logging()
    logger = logging.getLogger(f"big.{uuid.uuid4().hex[:6]}")
    run.capture_logging(logger)
    logger.warning("big %s end", "é" * (9 << 20))
    run.complete()
    text = run.get_logs("python")
    assert text.count("é") == 9 << 20 and text.endswith(" end\n")
    assert "Logging error" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "name",
    ["", "a\nb", "tab\there", "x" * 501, "损" * 501],
)
def test_bad_metric_names_raise_value_error(exp, name):
    run = exp.start_logging()
    for call in (
        lambda: run.log(name, 1.0),
        lambda: run.log(name, "text"),
        lambda: run.log_list(name, [1.0]),
        lambda: run.log_row(name, a=1),
        lambda: run.log_table(name, {"a": [1]}),
    ):
        with pytest.raises(ValueError):
            call()
    run.log("good", 1.0)
    run.flush()
    assert run.get_metrics() == {"good": 1.0}  # nothing bad was queued
    assert run.get_details()["delivery"]["rejected_entries"] == 0


def test_names_keep_surrounding_spaces_and_count_characters(exp):
    """As MLflow's keys: spaces around a name are part of it, and the limit counts characters, not bytes."""
    run = exp.start_logging()
    run.log(" lead ", 1.0)
    run.log("损" * 500, 2.0)
    run.flush()
    assert run.get_metrics() == {" lead ": 1.0, "损" * 500: 2.0}


def test_bad_values(exp):
    run = exp.start_logging()
    with pytest.raises(TypeError, match="log_list"):
        run.log("x", [1, 2, 3])
    with pytest.raises(TypeError, match="log_list"):
        run.log("x", (1, 2))
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match="log_list"):
        run.log("x", np.ones(3))
    run.log("np_scalar", np.float32(2.5))  # numpy scalars are numbers
    with pytest.raises(TypeError):
        run.log("x", None)
    with pytest.raises(TypeError):
        run.log("x", {"a": 1})
    with pytest.raises(TypeError):
        run.log("x", b"bytes")
    with pytest.raises(TypeError):
        run.log("x", 1.0, step=1.5)
    with pytest.raises(TypeError):
        run.log(3, 1.0)
    with pytest.raises(TypeError):
        run.log_list("x", "abc")
    with pytest.raises(TypeError):
        run.log_list("x", [1, "a"])
    with pytest.raises(ValueError, match="same length"):
        run.log_table("t", {"a": [1, 2], "b": [1]})
    with pytest.raises(TypeError):
        run.log_table("t", [1, 2])
    with pytest.raises(ValueError):
        run.log_table("t", {})
    with pytest.raises(ValueError):
        run.log_row("r")
    with pytest.raises(TypeError):
        run.log_row("r", a=[1, 2])
    with pytest.raises(ValueError):
        run.log_table("t", {"bad\ncolumn": [1]})
    with pytest.raises(TypeError):
        run.tag(5, "x")
    with pytest.raises(ValueError):
        run.tag("big", "v" * (64 * 1024 + 1))  # over the value limit
    with pytest.raises(ValueError):
        run.tag("", "empty key")
    with pytest.raises(ValueError):
        run.display_name = "x" * 501
    with pytest.raises(ValueError):
        run.log("text_too_long", "t" * (1024 * 1024 + 1))
    with pytest.raises(ValueError):
        run.capture_logging("x")._append("bad/stream", "text")
    with pytest.raises(TypeError):
        run.add_properties(["a"])
    run.log("scalar_name", 1.0)
    with pytest.raises(ConflictError, match="scalar"):
        run.log("scalar_name", "now text")
    with pytest.raises(ConflictError):
        run.log_list("scalar_name", [1.0])
    run.flush()
    assert run.get_metrics() == {"np_scalar": 2.5, "scalar_name": 1.0}
    # A kind stored by an earlier process is known too.
    again = Run.get(run.workspace, run.id)
    with pytest.raises(ConflictError):
        again.log_row("scalar_name", a=1)
    assert run.get_details()["delivery"]["rejected_entries"] == 0


def test_errors_are_flightlog_errors():
    assert issubclass(ConflictError, FlightlogError) and issubclass(ConflictError, ValueError)
    assert issubclass(NotFoundError, LookupError)
    assert issubclass(flightlog.errors.TransportError, ConnectionError)
    assert flightlog.errors.from_code("CONFLICT", "m").__class__ is ConflictError


def test_logging_from_several_threads(exp):
    import threading

    run = exp.start_logging()

    def work(k):
        for i in range(5000):
            run.log(f"t{k}", float(i), step=i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.flush()
    m = run.get_metrics()
    assert all(m[f"t{k}"] == [float(i) for i in range(5000)] for k in range(4))
