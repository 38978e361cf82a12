#!/usr/bin/env python
"""Train the book's model zoo on Fashion-MNIST and write weights + manifest to data/models/.

    python scripts/train_zoo.py                      # the whole zoo, default epochs
    python scripts/train_zoo.py --models v1_standard --epochs 2   # a quick check

The usual MobileNet recipe: SGD with Nesterov momentum, cosine learning-rate schedule with a
one-epoch warm-up, label smoothing, L2 weight decay on conv/dense kernels (none on depthwise),
random-shift + horizontal-flip augmentation; fixed seeds. Backend-agnostic Keras 3: it runs on
the CPU with TensorFlow (the project's default) or on a GPU machine with JAX
(``KERAS_BACKEND=jax``); the saved ``.weights.h5`` files load in either.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402

from qlib.data import fashion_mnist_splits  # noqa: E402
from qlib.models import build  # noqa: E402

#: The zoo: students in both variants, and a larger teacher for distillation.
ZOO = {
    "v1_standard": dict(arch="mobilenet_v1", alpha=0.5, variant="standard"),
    "v1_friendly": dict(arch="mobilenet_v1", alpha=0.5, variant="friendly"),
    "v2_standard": dict(arch="mobilenet_v2", alpha=0.35, variant="standard"),
    "v2_friendly": dict(arch="mobilenet_v2", alpha=0.35, variant="friendly"),
    "teacher": dict(arch="mobilenet_v1", alpha=0.75, variant="standard"),
}
COMMON = dict(input_shape=(32, 32, 3), num_classes=10, small_input=True, dropout=0.1, weight_decay=4e-5)


def shift_and_flip(xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random shifts (pad 4 with -1, crop back) and horizontal flips of a batch, drawn from ``rng``."""
    n, h, w, _ = xb.shape
    padded = np.pad(xb, ((0, 0), (4, 4), (4, 4), (0, 0)), constant_values=-1.0)
    dy, dx = rng.integers(0, 9, size=(2, n))
    out = np.stack([padded[k, dy[k]:dy[k] + h, dx[k]:dx[k] + w] for k in range(n)])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


class Augmented(keras.utils.PyDataset):
    """Shuffled batches with random shifts (pad 4, crop 32) and horizontal flips, seeded per epoch."""

    def __init__(self, x, y, batch_size, seed, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epoch = 0
        self.on_epoch_end()

    def __len__(self):
        return int(np.ceil(self.x.shape[0] / self.batch_size))

    def on_epoch_end(self):
        self.rng = np.random.default_rng([self.seed, self.epoch])
        self.order = self.rng.permutation(self.x.shape[0])
        self.epoch += 1

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        return shift_and_flip(self.x[idx], self.rng), keras.ops.one_hot(self.y[idx], 10)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_one(name, splits, epochs, batch_size, seed, out_dir, lr):
    keras.utils.set_random_seed(seed)
    cfg = dict(ZOO[name], **COMMON)
    model = build(**cfg)
    steps = int(np.ceil(splits["x_train"].shape[0] / batch_size)) * epochs
    warmup = min(steps // epochs, steps // 4)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps - warmup, warmup_target=lr,
                                                      warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                  metrics=["accuracy"])
    data = Augmented(splits["x_train"], splits["y_train"], batch_size, seed)
    val = (splits["x_val"], keras.ops.one_hot(splits["y_val"], 10))
    start = time.time()
    model.fit(data, epochs=epochs, validation_data=val, verbose=2)
    seconds = time.time() - start
    logits = model.predict(splits["x_test"], batch_size=1000, verbose=0)
    test_acc = float(np.mean(np.argmax(logits, 1) == splits["y_test"]))
    path = out_dir / f"{name}.weights.h5"
    plain = build(**cfg)  # an uncompiled twin: the file holds weights only, no optimizer state
    plain.set_weights(model.get_weights())
    plain.save_weights(path)
    print(f"{name}: test accuracy {test_acc:.4f}, {seconds:.0f} s", flush=True)
    return {
        "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "params": int(model.count_params()), "seed": seed, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": lr, "train_seconds": round(seconds, 1), "float_test_accuracy": test_acc,
        "keras_backend": keras.backend.backend(), "keras_version": keras.__version__,
        "machine": os.environ.get("QBOOK_MACHINE", platform.node() and platform.machine()),
        "command": " ".join(["python", "scripts/train_zoo.py", "--models", name, "--epochs", str(epochs),
                             "--batch-size", str(batch_size), "--lr", str(lr), "--seed", str(seed)]),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "models")
    ap.add_argument("--limit", type=int, default=0,
                    help="use the first N images of every split only (a smoke test of the pipeline)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    splits = fashion_mnist_splits()
    if args.limit:  # a smoke run: every split cut to N images (the manifest's accuracy is then on N test images)
        for split in ("train", "val", "test"):
            splits[f"x_{split}"], splits[f"y_{split}"] = splits[f"x_{split}"][:args.limit], splits[f"y_{split}"][:args.limit]
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in args.models:
        manifest[name] = train_one(name, splits, args.epochs, args.batch_size, args.seed, args.out, args.lr)
        if args.limit:
            manifest[name]["command"] += f" --limit {args.limit}"
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: (v["float_test_accuracy"], v["train_seconds"]) for k, v in manifest.items()}))


if __name__ == "__main__":
    main()
