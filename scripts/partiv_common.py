"""Shared by the Part IV scripts (pq_sweep, lowrank_sweep, distill_sweep): provenance and the training recipe.

The recipe is the zoo's (``train_zoo.py``): SGD with Nesterov momentum, cosine learning rate with a
warm-up, label smoothing 0.1, random shifts and flips; fixed seeds. The shifts and flips of each
batch depend only on (seed, epoch, batch), so a frozen teacher's logits can be computed once. Backend-agnostic Keras 3: runs on
the CPU with TensorFlow or on a GPU with ``KERAS_BACKEND=jax``.
"""

from __future__ import annotations

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

from qlib import results  # noqa: E402

from train_zoo import Augmented, shift_and_flip  # noqa: E402

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
    results.save(path, meta, records, sort_keys=True)
    print(f"wrote {path}: {len(records)} records", flush=True)


class Batches(Augmented):
    """The zoo's augmented batches (shifts and flips), each a function of (seed, epoch, batch index) only.

    ``train_zoo.Augmented`` draws every batch's shifts from one generator per epoch, in the order
    the batches are asked for; here batch ``i`` of epoch ``e`` has its own generator, so the same
    images come out whatever the order, and a frozen teacher's logits on them can be computed
    once for every run (:class:`WithTeacher`). ``epoch`` counts from 1. :meth:`batch` reads no
    state that ``on_epoch_end`` changes, so a batch prefetched while an epoch ends is still the one
    its ``(epoch, i)`` names.
    """

    def _order(self, epoch):
        # the permutation Augmented.on_epoch_end drew when it moved to `epoch`
        if getattr(self, "_orders", (None, None))[0] != epoch:
            self._orders = (epoch, np.random.default_rng([self.seed, epoch - 1]).permutation(self.x.shape[0]))
        return self._orders[1]

    def batch(self, epoch: int, i: int):
        """Batch ``i`` of ``epoch``: the images of ``Augmented``'s order for that epoch, shifted and
        flipped by the generator seeded with ``(seed, epoch, i)``."""
        idx = self._order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, epoch, i])
        return shift_and_flip(self.x[idx], rng), keras.ops.one_hot(self.y[idx], 10)

    def __getitem__(self, i):
        return self.batch(self.epoch, i)


def logit_epochs(epochs: int) -> int:
    """How many epochs of teacher logits a ``fit`` of ``epochs`` epochs needs: Keras 3's epoch
    iterator calls ``on_epoch_end`` once before the first epoch (``EpochIterator.reset``), so
    training epoch ``k`` (from 0) asks for batches of epoch ``k + 2``; one more covers an iterator
    that prefetches ahead."""
    return epochs + 2


class WithTeacher(keras.utils.PyDataset):
    """``Batches`` with the teacher's precomputed logits after the one-hot labels: ``(x, [y, logits])``.

    ``logits[e - 1, i]`` holds the teacher's logits on batch ``i`` of epoch ``e`` (see
    :func:`teacher_logits`); train with ``DistillationLoss(..., teacher_in="y_true")``.
    """

    def __init__(self, batches: Batches, logits: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.batches, self.logits = batches, logits

    def __len__(self):
        return len(self.batches)

    def on_epoch_end(self):
        self.batches.on_epoch_end()

    def __getitem__(self, i):
        e = self.batches.epoch  # read once: the images and the logits are those of the same epoch
        if e > self.logits.shape[0]:
            raise ValueError(f"teacher logits were computed for {self.logits.shape[0]} epochs; epoch {e} asked for "
                             f"(compute logit_epochs(epochs) of them)")
        x, y = self.batches.batch(e, i)
        t = self.logits[e - 1, i * self.batches.batch_size:i * self.batches.batch_size + x.shape[0]]
        return x, np.concatenate([np.asarray(y, np.float32), t], axis=1)


def teacher_logits(teacher, x, y, epochs: int, batch_size: int = 128, seed: int = 0) -> np.ndarray:
    """The frozen teacher's logits on every batch :class:`Batches` gives, epoch by epoch: ``(epochs, N, C)``."""
    data = Batches(x, y, batch_size, seed)
    out = np.empty((epochs, x.shape[0], teacher.output.shape[-1]), np.float32)
    for e in range(epochs):
        # the epoch's augmented images in batch order, then one compiled predict over all of them
        # (calling the model eagerly batch by batch costs minutes per epoch on a CPU)
        xs = np.concatenate([data.batch(e + 1, i)[0] for i in range(len(data))])
        out[e] = teacher.predict(xs, batch_size=1000, verbose=0)
        print(f"teacher logits: epoch {e + 1} of {epochs}", flush=True)
    return out


class _Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.wall, self.cpu = time.time(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        print(f"epoch {epoch + 1}: {time.time() - self.wall:.0f} s wall, {time.process_time() - self.cpu:.0f} s CPU "
              f"(all threads), loss {logs.get('loss', float('nan')):.4f}", flush=True)


def train(model, loss, splits, epochs: int, lr: float, batch_size: int = 128, seed: int = 0,
          warmup: bool = True, verbose: int = 0, data=None) -> dict:
    """Train ``model`` (compiled here) with the zoo's recipe on ``data`` (default: :class:`Batches`).

    Returns ``{"seconds": wall, "cpu_seconds": process CPU time, all threads}``.
    """
    keras.utils.set_random_seed(seed)
    steps_per_epoch = int(np.ceil(splits["x_train"].shape[0] / batch_size))
    steps = steps_per_epoch * epochs
    warm = min(steps_per_epoch, steps // 4) if warmup else 0
    schedule = keras.optimizers.schedules.CosineDecay(0.0 if warm else lr, steps - warm,
                                                      warmup_target=lr if warm else None, warmup_steps=warm)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True), loss=loss)
    if data is None:
        data = Batches(splits["x_train"], splits["y_train"], batch_size, seed)  # the zoo's shifts and flips
    start, cpu = time.time(), time.process_time()
    model.fit(data, epochs=epochs, verbose=verbose, callbacks=[_Clock()])
    return {"seconds": time.time() - start, "cpu_seconds": time.process_time() - cpu}


def accuracy(model, x, y, batch_size: int = 1000) -> dict:
    from qlib.evaluate import evaluate

    e = evaluate(model, x, y, batch_size=batch_size)
    return {"accuracy": e.accuracy, "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n}
