"""Shared by the Part IV scripts (pq_sweep, lowrank_sweep, distill_sweep): provenance and the training recipe.

The recipe is the zoo's (``train_zoo.py``): SGD with Nesterov momentum, cosine learning rate with a
warm-up, label smoothing 0.1, random shifts and flips; fixed seeds. Backend-agnostic Keras 3: runs on
the CPU with TensorFlow or on a GPU with ``KERAS_BACKEND=jax``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import keras  # noqa: E402

from train_zoo import Augmented  # noqa: E402

LABEL_SMOOTHING = 0.1


def machine() -> str:
    """What ran it: ``QBOOK_MACHINE`` if set (e.g. "NVIDIA H100 (Keras 3 + JAX)"), else the host's CPU count."""
    return os.environ.get("QBOOK_MACHINE") or f"{platform.machine()} CPU, {os.cpu_count()} cores"


def provenance(argv, seconds: float) -> dict:
    """The fields every shipped result carries."""
    script = Path(sys.argv[0]).name
    return {"command": " ".join(["python", f"scripts/{script}"] + list(argv)), "keras_backend": keras.backend.backend(),
            "keras_version": keras.__version__, "machine": machine(), "seconds": round(seconds, 1)}


def write_results(path: Path, meta: dict, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "records": records}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}: {len(records)} records", flush=True)


def train(model, loss, splits, epochs: int, lr: float, batch_size: int = 128, seed: int = 0,
          warmup: bool = True, verbose: int = 2) -> float:
    """Train ``model`` (compiled here) with the zoo's recipe; returns the seconds it took."""
    keras.utils.set_random_seed(seed)
    steps_per_epoch = int(np.ceil(splits["x_train"].shape[0] / batch_size))
    steps = steps_per_epoch * epochs
    warm = min(steps_per_epoch, steps // 4) if warmup else 0
    schedule = keras.optimizers.schedules.CosineDecay(0.0 if warm else lr, steps - warm,
                                                      warmup_target=lr if warm else None, warmup_steps=warm)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True), loss=loss)
    data = Augmented(splits["x_train"], splits["y_train"], batch_size, seed)  # the zoo's shifts and flips
    start = time.time()
    model.fit(data, epochs=epochs, verbose=verbose)
    return time.time() - start


def accuracy(model, x, y, batch_size: int = 1000) -> dict:
    from qlib.evaluate import evaluate

    e = evaluate(model, x, y, batch_size=batch_size)
    return {"accuracy": e.accuracy, "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n}
