#!/usr/bin/env python
"""Distil the zoo's teacher into a much smaller student; the same student from labels alone; int8 after.

    python scripts/distill_sweep.py --runs labels T4_a0.5          # train + deploy two runs (CPU)
    python scripts/distill_sweep.py --epochs 5 --runs labels T1_a0.5 T2_a0.5 T4_a0.5 T4_a0.9 T8_a0.5   # the shipped sweep
    KERAS_BACKEND=jax python scripts/distill_sweep.py --phase train --runs T2_a0.5   # one run on a GPU
    python scripts/distill_sweep.py --phase deploy                  # then here: int8 TFLite, results

The student is a MobileNet v1 0.25 with the ImageNet stride-2 stem (``small_input=False``):
0.8M multiply-adds per image against the teacher's 26.5M (MobileNet v1 0.75, 94.0% float). Every
run trains it from the same initialisation (seed 0) for ``--epochs`` epochs (default 10) with the zoo's recipe
(SGD + Nesterov, cosine schedule with a one-epoch warm-up, label smoothing 0.1, shifts and
flips); ``labels`` uses cross-entropy on the labels only, ``T{T}_a{alpha}`` the distillation
loss (``qlib.distill``) with temperature ``T`` and label weight ``alpha``, the teacher running on
the same augmented batches. Default grid: ``labels`` and T in {1, 2, 4, 8} x alpha in
{0.1, 0.5, 0.9}.

Budget: the shipped sweep ran 5 epochs on all 55,000 training images (``--epochs 5``). On 2 CPU
cores a student epoch takes about 40-70 s of wall-clock time (about 50 CPU-seconds), so a run takes
about 5 minutes; the teacher's logits on every augmented batch of every epoch are computed once
before the distilled runs (one compiled ``predict`` per epoch) and shared by all of them. Every
record carries its ``train_seconds`` and ``train_cpu_seconds``. Runs are independent: on a GPU,
start one process per run in parallel.

Phase ``train`` (any Keras backend) writes each student's weights and float results to
``--work``; phase ``deploy`` (TensorFlow) converts every trained student to full-integer TFLite,
measures its int8 test accuracy, writes ``data/sweeps/distill.json``, and ships the ``labels``
student and the best distilled one to ``data/models/students`` with a manifest (provenance and
sha256, loadable with ``qlib.zoo.load_model(name, models_dir)``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from partiv_common import (LABEL_SMOOTHING, Batches, WithTeacher, accuracy, logit_epochs, provenance,  # noqa: E402
                            teacher_logits, train, write_results)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from qlib.data import fashion_mnist_splits, one_per_class, sha256_file  # noqa: E402
from qlib.distill import DistillationLoss, distiller  # noqa: E402
from qlib.models import build, layer_costs  # noqa: E402
from qlib.zoo import load_model, manifest  # noqa: E402

STUDENT = dict(arch="mobilenet_v1", alpha=0.25, variant="standard", input_shape=[32, 32, 3], num_classes=10,
               small_input=False, dropout=0.1, weight_decay=4e-5)
GRID = ["labels"] + [f"T{t:g}_a{a:g}" for t in (1, 2, 4, 8) for a in (0.1, 0.5, 0.9)]
STUDENTS_DIR = ROOT / "data" / "models" / "students"


def parse(run: str):
    """``"labels"`` -> (None, 1.0); ``"T4_a0.5"`` -> (4.0, 0.5)."""
    if run == "labels":
        return None, 1.0
    m = re.fullmatch(r"T([0-9.]+)_a([0-9.]+)", run)
    if not m:
        raise SystemExit(f"run names are 'labels' or like 'T4_a0.5' (temperature 4, label weight 0.5); got {run!r}")
    return float(m.group(1)), float(m.group(2))


def student():
    cfg = dict(STUDENT, input_shape=tuple(STUDENT["input_shape"]))
    return build(**cfg)


LOGITS_PREFIX = "teacher-logits-"  # the files in --work that hold the shared teacher logits (not runs)


def logits_key(seed: int, epochs: int, n: int) -> str:
    """The name of the teacher logits a sweep of ``epochs`` epochs on ``n`` training images uses."""
    return f"{LOGITS_PREFIX}s{seed}-e{logit_epochs(epochs)}-n{n}"


def cached_teacher_logits(args, splits, teacher):
    """The teacher's logits on every training batch of every epoch, computed once (``--work``)."""
    from qlib.data import sha256_file

    key = logits_key(args.seed, args.epochs, splits["x_train"].shape[0])
    path = args.work / f"{key}.npy"
    teacher_sha = manifest()["teacher"]["sha256"]
    stamp = args.work / f"{key}.json"
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()).get("teacher_sha256") == teacher_sha:
        if json.loads(stamp.read_text()).get("sha256") == sha256_file(path):
            return np.load(path)
    start, cpu = time.time(), time.process_time()
    logits = teacher_logits(teacher, splits["x_train"], splits["y_train"], logit_epochs(args.epochs), seed=args.seed)
    np.save(path, logits)
    stamp.write_text(json.dumps({"teacher_sha256": teacher_sha, "sha256": sha256_file(path),
                                 "seconds": round(time.time() - start, 1),
                                 "cpu_seconds": round(time.process_time() - cpu, 1)}) + "\n")
    return logits


def train_run(run, args, splits, test, teacher):
    temperature, alpha = parse(run)
    keras.utils.set_random_seed(args.seed)
    net = student()
    if temperature is None:
        model, data = net, None
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=LABEL_SMOOTHING)
    elif args.live_teacher:
        model, data = distiller(net, teacher), None
        loss = DistillationLoss(10, temperature, alpha, label_smoothing=LABEL_SMOOTHING)
    else:
        logits = cached_teacher_logits(args, splits, teacher)
        model = net
        data = WithTeacher(Batches(splits["x_train"], splits["y_train"], 128, args.seed), logits)
        loss = DistillationLoss(10, temperature, alpha, label_smoothing=LABEL_SMOOTHING, teacher_in="y_true")
    timing = train(model, loss, splits, args.epochs, args.lr, seed=args.seed, data=data)
    seconds = timing["seconds"]
    path = args.work / f"{run}.weights.h5"
    net.save_weights(path)
    rec = {"run": run, "temperature": temperature, "alpha": alpha, "epochs": args.epochs, "lr": args.lr,
           "seed": args.seed, "batch_size": 128, "train_seconds": round(seconds, 1),
           "train_cpu_seconds": round(timing["cpu_seconds"], 1),
           "teacher": None if temperature is None else ("live" if args.live_teacher else "precomputed logits"),
           "params": int(net.count_params()), "macs": int(sum(c["macs"] for c in layer_costs(net))),
           "limit": args.limit}
    rec.update(accuracy(net, *test))
    meta = provenance(["--phase", "train", "--runs", run, "--epochs", str(args.epochs), "--lr", str(args.lr),
                       "--seed", str(args.seed)] + (["--limit", str(args.limit)] if args.limit else [])
                      + (["--live-teacher"] if args.live_teacher else []), seconds)
    (args.work / f"{run}.json").write_text(json.dumps({"meta": meta, "record": rec}, indent=1) + "\n")
    print(f"{run}: float {rec['accuracy']:.4f} after {args.epochs} epochs ({seconds:.0f} s)", flush=True)


def deploy(args, splits, test):
    from qlib.tflite import convert_int8

    calib, _ = one_per_class(splits["x_val"], splits["y_val"])
    parts = sorted(p for p in args.work.glob("*.json") if not p.name.startswith(LOGITS_PREFIX))
    if not parts:
        raise SystemExit(f"no trained runs in {args.work}; run --phase train first")
    records = []
    for part in parts:
        saved = json.loads(part.read_text())
        rec, meta = saved["record"], saved["meta"]
        net = student()
        net.load_weights(args.work / f"{rec['run']}.weights.h5")
        rec = dict(rec, **{k: meta[k] for k in ("command", "keras_backend", "keras_version", "machine")})
        rec["int8"] = accuracy(convert_int8(net, calib), *test)
        records.append(rec)
        print(f"{rec['run']}: float {rec['accuracy']:.4f}, int8 {rec['int8']['accuracy']:.4f}", flush=True)
    teacher = load_model("teacher")
    t = {"run": "teacher", "temperature": None, "alpha": None, "params": int(teacher.count_params()),
         "macs": int(sum(c["macs"] for c in layer_costs(teacher))), "int8": accuracy(convert_int8(teacher, calib), *test)}
    t.update(accuracy(teacher, *test))
    if not any(r["limit"] for r in records):  # smoke runs are never shipped
        ship(args, records)
    return [t] + records


def ship(args, records):
    """Copy the labels-only student and the best distilled one to data/models/students, with a manifest."""
    best = max((r for r in records if r["temperature"] is not None), key=lambda r: r["accuracy"], default=None)
    chosen = [r for r in records if r["run"] == "labels"] + ([best] if best else [])
    STUDENTS_DIR.mkdir(parents=True, exist_ok=True)
    man_path = STUDENTS_DIR / "manifest.json"
    man = json.loads(man_path.read_text()) if man_path.exists() else {}
    for rec in chosen:
        name = "student_labels" if rec["run"] == "labels" else "student_distilled"
        path = STUDENTS_DIR / f"{name}.weights.h5"
        shutil.copyfile(args.work / f"{rec['run']}.weights.h5", path)
        man[name] = {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
                     "config": STUDENT, "params": rec["params"], "seed": rec["seed"], "epochs": rec["epochs"],
                     "batch_size": rec["batch_size"], "learning_rate": rec["lr"], "run": rec["run"],
                     "temperature": rec["temperature"], "alpha": rec["alpha"], "train_seconds": rec["train_seconds"],
                     "float_test_accuracy": rec["accuracy"], "int8_test_accuracy": rec["int8"]["accuracy"],
                     "keras_backend": rec["keras_backend"], "keras_version": rec["keras_version"],
                     "machine": rec["machine"], "command": rec["command"]}
    man_path.write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    print(f"shipped {sorted(man)} to {STUDENTS_DIR}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=GRID)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phase", choices=["all", "teacher", "train", "deploy"], default="all",
                    help="teacher: only compute the teacher's logits on the training batches (once, for every run)")
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only (a smoke test)")
    ap.add_argument("--live-teacher", action="store_true",
                    help="run the teacher on every batch (distiller) instead of its logits precomputed once "
                         "for all runs (the same batches: the same loss, up to float rounding)")
    ap.add_argument("--work", type=Path, default=ROOT / "data" / "work" / "distill",
                    help="trained students and their float results (not shipped)")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "distill.json")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    for run in args.runs:
        parse(run)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    splits = fashion_mnist_splits()
    n_train = len(splits["y_train"])
    if args.limit:
        splits["x_train"], splits["y_train"] = splits["x_train"][:args.limit], splits["y_train"][:args.limit]
    test = (splits["x_test"], splits["y_test"])
    if args.phase == "teacher":
        cached_teacher_logits(args, splits, load_model("teacher"))
        return
    if args.phase in ("all", "train"):
        teacher = load_model("teacher")
        for run in args.runs:
            train_run(run, args, splits, test, teacher)
    if args.phase == "train":
        print(f"students in {args.work}; when every run is done: python scripts/distill_sweep.py --phase deploy")
        return
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("the deploy phase converts to TFLite and needs KERAS_BACKEND=tensorflow")
    records = deploy(args, splits, test)
    meta = provenance(argv, time.time() - start)
    # how long the teacher's logits, shared by the distilled runs, took to compute
    used = {(r["seed"], r["epochs"], r["limit"] or n_train) for r in records if r.get("teacher") == "precomputed logits"}
    stamps = [args.work / f"{logits_key(*u)}.json" for u in sorted(used)]
    if len(stamps) == 1 and stamps[0].is_file():
        meta["teacher_logits"] = {k: v for k, v in json.loads(stamps[0].read_text()).items()
                                  if k in ("seconds", "cpu_seconds")}
    meta.update({"student": STUDENT, "teacher": {k: manifest()["teacher"][k] for k in ("config", "float_test_accuracy")},
                 "note": "each record carries the command, backend and machine of its training run"})
    write_results(args.out, meta, records)


if __name__ == "__main__":
    main()
