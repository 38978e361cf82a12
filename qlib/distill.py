"""Knowledge distillation: a small student learns from the labels and from a teacher's softened outputs.

Hinton et al. soften both networks' outputs with a temperature ``T``, ``softmax(z / T)``, so
the teacher's small probabilities (which wrong classes look like the right one) carry signal.
The student minimises a mix of two cross-entropies::

    loss = alpha * CE(labels, softmax(z_s))  +  (1 - alpha) * T^2 * CE(softmax(z_t / T), softmax(z_s / T))

``alpha = 1`` is plain training on labels. The ``T^2`` keeps the soft term's gradients at the
same scale whatever the temperature (they shrink like ``1 / T^2``). This is the loss the
LPIRC 2018 runner-up describes: cross-entropy with the labels plus cross-entropy with the
teacher's soft labels, with a mixing ratio.

:func:`distillation_loss` is the numpy reference; :class:`DistillationLoss` the same loss for
Keras (any backend), applied to the output of :func:`distiller`, a model that runs the student
and the frozen teacher side by side.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

from ._checks import check_array

#: Where ``scripts/distill_sweep.py`` ships its students (weights + ``manifest.json``).
STUDENTS_DIR = Path(__file__).resolve().parents[1] / "data" / "models" / "students"

__all__ = ["softmax", "distillation_loss", "DistillationLoss", "distiller", "STUDENTS_DIR", "students", "load_student"]


def _check_params(temperature, alpha, label_smoothing=0.0):
    if not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the weight of the label term) must be in [0, 1], got {alpha!r}")
    if not isinstance(label_smoothing, numbers.Real) or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return float(temperature), float(alpha), float(label_smoothing)


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` over the last axis (numerically stable).

    Examples
    --------
    >>> softmax(np.array([2.0, 0.0]), temperature=1.0).round(3).tolist()
    [0.881, 0.119]
    >>> softmax(np.array([2.0, 0.0]), temperature=4.0).round(3).tolist()   # softer
    [0.622, 0.378]
    """
    temperature, _, _ = _check_params(temperature, 0.0)
    z = check_array(logits, "logits").astype(np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _one_hot(labels, num_classes):
    y = np.asarray(labels)
    if y.ndim == 2:
        if y.shape[1] != num_classes:
            raise ValueError(f"one-hot labels have {y.shape[1]} columns for {num_classes} classes")
        return y.astype(np.float64)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids (N,) or one-hot (N, classes), got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got values from {y.min()} to {y.max()}")
    return np.eye(num_classes)[y]


def distillation_loss(labels, student_logits, teacher_logits, temperature: float = 4.0, alpha: float = 0.5,
                      label_smoothing: float = 0.0) -> float:
    """The distillation loss, averaged over the batch (numpy reference).

    Parameters
    ----------
    labels : array_like
        Class ids ``(N,)`` or one-hot ``(N, C)``.
    student_logits, teacher_logits : array_like
        ``(N, C)`` logits.
    temperature : float
        ``T``, applied to both networks in the soft term.
    alpha : float
        Weight of the label term; ``1 - alpha`` weighs the soft term.
    label_smoothing : float
        Smoothing of the labels in the label term (as the zoo's training recipe uses).

    Examples
    --------
    >>> s, t = np.array([[1.0, 0.0]]), np.array([[3.0, 0.0]])
    >>> hard = -np.log(softmax(s)[0, 0])                                 # CE with label 0
    >>> soft = -(softmax(t, 2.0) * np.log(softmax(s, 2.0))).sum()        # CE with the soft teacher
    >>> bool(np.isclose(distillation_loss([0], s, t, temperature=2.0, alpha=0.25), 0.25 * hard + 0.75 * 4 * soft))
    True
    """
    temperature, alpha, label_smoothing = _check_params(temperature, alpha, label_smoothing)
    s = check_array(student_logits, "student_logits").astype(np.float64)
    t = check_array(teacher_logits, "teacher_logits").astype(np.float64)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"student {s.shape} and teacher {t.shape} logits must both be (N, classes)")
    num_classes = s.shape[1]
    y = _one_hot(labels, num_classes)
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"{y.shape[0]} labels for {s.shape[0]} logits")
    y = y * (1 - label_smoothing) + label_smoothing / num_classes
    hard = -np.sum(y * np.log(softmax(s)), axis=1)
    soft = -np.sum(softmax(t, temperature) * np.log(softmax(s, temperature)), axis=1)
    return float(np.mean(alpha * hard + (1 - alpha) * temperature ** 2 * soft))


def _keras():
    import keras

    return keras


class DistillationLoss(_keras().losses.Loss):
    """:func:`distillation_loss` as a Keras loss, with the teacher's logits run live or precomputed.

    ``teacher_in="y_pred"`` (default), for the output of :func:`distiller`: ``y_true`` is one-hot
    ``(N, C)`` and ``y_pred`` ``(N, 2C)``, the student's logits then the teacher's.
    ``teacher_in="y_true"``, for teacher logits computed beforehand (the teacher is frozen, so
    they can be computed once for every run that sees the same batches): ``y_true`` is
    ``(N, 2C)``, the one-hot labels then the teacher's logits, and ``y_pred`` the student's
    logits ``(N, C)``. Works on every Keras backend.

    Examples
    --------
    >>> loss = DistillationLoss(num_classes=2, temperature=2.0, alpha=0.25)
    >>> s, t = np.array([[1.0, 0.0]]), np.array([[3.0, 0.0]])
    >>> keras_value = float(loss(np.eye(2)[[0]], np.concatenate([s, t], axis=1)))
    >>> bool(np.isclose(keras_value, distillation_loss([0], s, t, temperature=2.0, alpha=0.25), rtol=1e-5))
    True
    >>> cached = DistillationLoss(num_classes=2, temperature=2.0, alpha=0.25, teacher_in="y_true")
    >>> bool(np.isclose(float(cached(np.concatenate([np.eye(2)[[0]], t], axis=1), s)), keras_value))
    True
    """

    def __init__(self, num_classes: int, temperature: float = 4.0, alpha: float = 0.5, label_smoothing: float = 0.0,
                 teacher_in: str = "y_pred", name: str = "distillation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if teacher_in not in ("y_pred", "y_true"):
            raise ValueError(f"teacher_in must be 'y_pred' (the output of distiller) or 'y_true' (precomputed "
                             f"teacher logits after the one-hot labels), got {teacher_in!r}")
        self.num_classes = int(num_classes)
        self.teacher_in = teacher_in
        self.temperature, self.alpha, self.label_smoothing = _check_params(temperature, alpha, label_smoothing)

    def call(self, y_true, y_pred):
        ops = _keras().ops
        c, temp = self.num_classes, self.temperature
        if self.teacher_in == "y_pred":
            s, t, y = y_pred[:, :c], ops.stop_gradient(y_pred[:, c:]), y_true
        else:
            s, t, y = y_pred, ops.stop_gradient(ops.cast(y_true[:, c:], y_pred.dtype)), y_true[:, :c]
        y = ops.cast(y, s.dtype) * (1 - self.label_smoothing) + self.label_smoothing / c
        hard = -ops.sum(y * ops.log_softmax(s, axis=-1), axis=-1)
        soft = -ops.sum(ops.softmax(t / temp, axis=-1) * ops.log_softmax(s / temp, axis=-1), axis=-1)
        return self.alpha * hard + (1 - self.alpha) * temp ** 2 * soft

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "temperature": self.temperature,
                "alpha": self.alpha, "label_smoothing": self.label_smoothing, "teacher_in": self.teacher_in}

    def __repr__(self) -> str:
        return (f"DistillationLoss(temperature={self.temperature:g}, alpha={self.alpha:g}, "
                f"label_smoothing={self.label_smoothing:g}, teacher_in={self.teacher_in!r})")


class _Frozen(_keras().layers.Layer):
    """Runs a model in inference mode whatever mode the outer model is in (a functional model
    would pass its own ``training`` flag on to a nested model)."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def call(self, x):
        return self.model(x, training=False)

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(input_shape)


def distiller(student, teacher):
    """A training model: one input, the student's and the frozen teacher's logits side by side.

    The teacher runs in inference mode (BatchNorm statistics, no dropout) and is not trained;
    the student's layers are shared, so training this model trains ``student`` itself.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((3,))
    >>> student = keras.Model(inp, keras.layers.Dense(2, name="s")(inp))
    >>> teacher = keras.Model(inp, keras.layers.Dense(2, name="t")(inp))
    >>> d = distiller(student, teacher)
    >>> d.output_shape, len(d.trainable_weights) == len(student.trainable_weights)
    ((None, 4), True)
    """
    keras = _keras()
    if tuple(student.input.shape[1:]) != tuple(teacher.input.shape[1:]):
        raise ValueError(f"student input {student.input.shape} and teacher input {teacher.input.shape} differ")
    if student.output.shape[-1] != teacher.output.shape[-1]:
        raise ValueError(f"student has {student.output.shape[-1]} outputs, teacher {teacher.output.shape[-1]}")
    teacher.trainable = False
    inp = keras.Input(student.input.shape[1:], name="image")
    s = student(inp)
    t = _Frozen(teacher, name="teacher")(inp)
    out = keras.layers.Concatenate(name="student_teacher_logits")([s, t])
    return keras.Model(inp, out, name="distiller")


def students() -> dict:
    """The shipped students' manifest: ``{name: {config, sha256, run, temperature, alpha, ...}}``.

    Empty until a full run of ``scripts/distill_sweep.py`` (no ``--limit``) ships its ``labels``
    student and its best distilled one to :data:`STUDENTS_DIR`; reduced (``--limit``) runs ship none.

    Examples
    --------
    >>> isinstance(students(), dict)
    True
    >>> set(students()) <= {"student_labels", "student_distilled"}
    True
    """
    from .zoo import manifest

    if not (STUDENTS_DIR / "manifest.json").is_file():
        return {}
    return manifest(STUDENTS_DIR)


def load_student(name: str):
    """A shipped student (``"student_labels"`` or ``"student_distilled"``), sha256 checked.

    Raises ``FileNotFoundError`` (saying which command ships them) while none is shipped.

    Examples
    --------
    >>> try:
    ...     load_student("teacher")
    ... except ValueError as err:
    ...     print(err)
    unknown student 'teacher'; choose 'student_labels' or 'student_distilled'
    """
    from .zoo import load_model

    if name not in ("student_labels", "student_distilled"):
        raise ValueError(f"unknown student {name!r}; choose 'student_labels' or 'student_distilled'")
    if name not in students():
        raise FileNotFoundError(f"no {name} shipped in {STUDENTS_DIR}: run scripts/distill_sweep.py without --limit "
                                f"(train and deploy phases) to train and ship the students")
    return load_model(name, STUDENTS_DIR)
