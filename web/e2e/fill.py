"""Fills a running flightlog server through the Python SDK with the runs the portal's end-to-end tests look at,
and writes what was logged (ids and expected values) as JSON for the tests to check against.

Usage: python fill.py SERVER_URL FIXTURE_JSON
"""

import json
import logging
import os
import struct
import sys
import tempfile
import urllib.request
import zlib

from flightlog import Experiment, Workspace


def png(width, height, rgb):
    """A solid-colour PNG (stdlib only), so the fill needs no imaging library and each step's image differs."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def ramp(final, n=50):
    """n values going linearly from 1.0 (step 0) to `final` (step n-1): the latest value is exactly `final`."""
    return [1.0 + (final - 1.0) * i / (n - 1) for i in range(n)]


STEPS = 50

# Top-level runs of the vision experiment: (name, params, final loss, final acc, status).
VISION = [
    ("baseline", {"lr": "0.1", "batch_size": "32", "optimizer": "sgd"}, 0.25, 0.9, "Completed"),
    ("high-lr", {"lr": "0.5", "batch_size": "32", "optimizer": "sgd"}, 0.75, 0.6, "Completed"),
    ("small-batch", {"lr": "0.01", "batch_size": "16", "optimizer": "adam"}, 0.45, 0.8, "Failed"),
]
NLP = [
    ("bert-base", {"lr": "0.001", "layers": "12"}, 0.3, 0.7, "Completed"),
    ("bert-large", {"lr": "0.001", "layers": "24"}, 0.2, 0.75, "Completed"),
]


BASELINE_SAMPLES = [(220, 40, 40), (40, 180, 40), (40, 40, 220)]
HIGH_LR_SAMPLES = [(220, 200, 40), (40, 200, 200), (200, 40, 200)]

# The chart features' run (experiment "portal-charts", outside the e2e-* experiments the list tests count):
# a short series through zero for x modes, log scale and smoothing; a long one with a single spike for
# server downsampling and zoom; a confusion matrix; a histogram.
WAVE = [-1.0, 0.0] + [0.5 * 1.1 ** k + (0.3 if k % 3 == 0 else 0.0) for k in range(38)]
SPIKY_POINTS = 200_000
SPIKE_STEP = 123_457
SPIKE_VALUE = 1000.0
CONFUSION = {"class_labels": ["cat", "dog", "bird"], "matrix": [[50, 2, 2], [3, 40, 7], [0, 9, 31]]}
HISTOGRAM = {"limits": [-1.0, -0.5, 0.0, 0.5, 1.0], "counts": [3.0, 12.0, 20.0, 9.0, 1.0]}


def spiky(step):
    """1.0 plus a small ripple, and SPIKE_VALUE at SPIKE_STEP: the one point downsampling must not drop."""
    return SPIKE_VALUE if step == SPIKE_STEP else 1.0 + 0.01 * (step % 10)


def log_chart_run(ws, url):
    exp = Experiment(ws, "portal-charts")
    run = exp.start_logging(display_name="charts")
    for step, v in enumerate(WAVE):
        run.log("wave", v, step=step)
    for step in range(SPIKY_POINTS):
        run.log("spiky", spiky(step), step=step)
    run.log_confusion_matrix("confusion", CONFUSION)
    run.flush()
    # The SDK has no histogram call (histograms come from TensorBoard ingest): the native batch API's kind.
    _post_json(f"{url}/api/v1/runs/{run.id}/batch",
               {"metrics": [dict(HISTOGRAM, kind="histogram", name="weights", step=0)]})
    run.complete()
    return {"id": run.id, "experiment_id": exp.id, "wave": WAVE, "spiky_points": SPIKY_POINTS,
            "spike_step": SPIKE_STEP, "spike_value": SPIKE_VALUE, "confusion": CONFUSION, "histogram": HISTOGRAM}


def _post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=30).close()


def log_scalar_run(run, params, loss, acc):
    run._patch(add_params=params)  # the SDK has no public params call yet; RunPatch.add_params is the API's way
    for step, (lv, av) in enumerate(zip(ramp(loss), ramp(acc))):
        run.log("loss", lv, step=step)
        run.log("acc", av, step=step)


def main():
    url, out = sys.argv[1], sys.argv[2]
    ws = Workspace(url)
    fixture = {"url": url, "experiments": {}, "runs": {}}

    vision = Experiment(ws, "e2e-vision")
    nlp = Experiment(ws, "e2e-nlp")
    Experiment(ws, "e2e-empty")

    tmp = tempfile.mkdtemp(prefix="flightlog-e2e-fill-")
    for name, params, loss, acc, status in VISION:
        run = vision.start_logging(display_name=name, tags={"model": "cnn", "team": "vision"},
                                   properties={"dataset": "mnist-v1"})
        run.description = f"e2e run {name}"
        log_scalar_run(run, params, loss, acc)
        entry = {"id": run.id, "name": name, "params": params, "loss": loss, "acc": acc, "status": status,
                 "experiment": "e2e-vision", "points": STEPS}
        if name == "baseline":
            # Every other kind the run view shows: a list, rows, a table, images at three steps, logs, artifacts.
            run.log_list("lr_schedule", [0.1, 0.05, 0.01])
            for fpr, tpr in [(0.0, 0.0), (0.25, 0.7), (0.5, 0.85), (1.0, 1.0)]:
                run.log_row("roc", fpr=fpr, tpr=tpr)
            run.log_table("pr", {"recall": [0.5, 0.6, 0.7], "precision": [0.9, 0.8, 0.65]})
            for step, rgb in enumerate(BASELINE_SAMPLES):
                path = os.path.join(tmp, f"sample{step}.png")
                with open(path, "wb") as f:
                    f.write(png(48, 32, rgb))
                run.log_image("samples", path=path, step=step)
            logger = logging.getLogger("e2e.train")
            run.capture_logging(logger)
            for epoch in range(1, 4):
                logger.info("epoch %d finished: loss=%.3f", epoch, ramp(loss)[epoch * 10])
            run._native.append_log("stdout", "stdout line one\nstdout line two\n")
            run.upload_file("notes.txt", _text_file(tmp, "notes.txt", "hello from the e2e fill\nsecond line\n"))
            run.upload_file("config/train.json", _text_file(tmp, "train.json", json.dumps({"epochs": 3, "lr": 0.1})))
            entry.update({
                "sample_colors": BASELINE_SAMPLES,
                "lr_schedule": [0.1, 0.05, 0.01],
                "roc_rows": 4,
                "pr": {"recall": [0.5, 0.6, 0.7], "precision": [0.9, 0.8, 0.65]},
                "images": {"name": "samples", "steps": [0, 1, 2]},
                "log_line": "epoch 2 finished",
                "stdout_line": "stdout line two",
                "artifacts": ["config/train.json", "notes.txt"],
                "notes": "hello from the e2e fill",
            })
        if name == "high-lr":
            # Images of the same name as baseline's, for compare's side-by-side gallery.
            for step, rgb in enumerate(HIGH_LR_SAMPLES):
                path = os.path.join(tmp, f"high-lr-sample{step}.png")
                with open(path, "wb") as f:
                    f.write(png(48, 32, rgb))
                run.log_image("samples", path=path, step=step)
            entry["images"] = {"name": "samples", "steps": [0, 1, 2], "colors": HIGH_LR_SAMPLES}
            entry["children"] = []
            for fold in (1, 2):
                with run.child_run(f"fold-{fold}") as child:
                    child._patch(add_params={"fold": str(fold)})
                    child.log("fold_acc", 0.5 + fold / 10, step=0)
                entry["children"].append(child.id)
        run.flush()
        if status == "Failed":
            run.fail(error_details="diverged at step 49", error_code="E2E_DIVERGED")
        else:
            run.complete()
        fixture["runs"][name] = entry

    for name, params, loss, acc, status in NLP:
        with nlp.start_logging(display_name=name, tags={"team": "nlp"}) as run:
            log_scalar_run(run, params, loss, acc)
        fixture["runs"][name] = {"id": run.id, "name": name, "params": params, "loss": loss, "acc": acc,
                                 "status": status, "experiment": "e2e-nlp", "points": STEPS}

    fixture["charts"] = log_chart_run(ws, url)
    ws.flush()
    for exp in (vision, nlp, Experiment(ws, "e2e-empty")):
        runs = exp.get_runs(include_children=True)
        fixture["experiments"][exp.name] = {"id": exp.id, "run_count": len(runs),
                                            "top_level": len(exp.get_runs())}
    with open(out, "w") as f:
        json.dump(fixture, f, indent=1)
    print(f"filled {url}: " + ", ".join(f"{k} ({v['run_count']} runs)" for k, v in fixture["experiments"].items()))


def _text_file(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


if __name__ == "__main__":
    main()
