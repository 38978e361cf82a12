"""Distillation loss: numpy and Keras against a hand computation; the teacher stays frozen."""

import math

import keras
import numpy as np
import pytest

from qlib.distill import DistillationLoss, distillation_loss, distiller, softmax


def _hand(label, s, t, temperature, alpha, smoothing=0.0):
    """The loss of one example, written out with math.exp and math.log."""
    def sm(z, temp):
        e = [math.exp(v / temp) for v in z]
        return [v / sum(e) for v in e]
    n = len(s)
    y = [(1 - smoothing) * (i == label) + smoothing / n for i in range(n)]
    hard = -sum(yi * math.log(p) for yi, p in zip(y, sm(s, 1.0)))
    soft = -sum(pt * math.log(ps) for pt, ps in zip(sm(t, temperature), sm(s, temperature)))
    return alpha * hard + (1 - alpha) * temperature ** 2 * soft


CASES = [(0, [2.0, -1.0, 0.5], [4.0, 1.0, -2.0], 1.0, 0.5, 0.0),
         (2, [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], 4.0, 0.1, 0.0),
         (1, [5.0, -5.0, 0.0], [0.0, 0.0, 1.0], 8.0, 0.9, 0.1),
         (1, [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 2.0, 1.0, 0.0),
         (0, [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 2.0, 0.0, 0.0)]


@pytest.mark.parametrize("label,s,t,temperature,alpha,smoothing", CASES)
def test_loss_matches_a_hand_computation(label, s, t, temperature, alpha, smoothing):
    expected = _hand(label, s, t, temperature, alpha, smoothing)
    got = distillation_loss([label], [s], [t], temperature, alpha, smoothing)
    assert got == pytest.approx(expected, rel=1e-12)
    keras_loss = DistillationLoss(3, temperature, alpha, smoothing)
    y = np.eye(3, dtype=np.float32)[[label]]
    value = float(keras_loss(y, np.array([s + t], np.float32)))
    assert value == pytest.approx(expected, rel=1e-5)
    precomputed = DistillationLoss(3, temperature, alpha, smoothing, teacher_in="y_true")
    value = float(precomputed(np.concatenate([y, np.array([t], np.float32)], axis=1), np.array([s], np.float32)))
    assert value == pytest.approx(expected, rel=1e-5)


def test_loss_averages_over_the_batch_and_accepts_one_hot():
    labels, s, t = [0, 2], [[1.0, 0.0, 0.0], [0.0, 1.0, 3.0]], [[2.0, 0.0, 1.0], [0.5, 0.5, 0.0]]
    each = [_hand(l, si, ti, 3.0, 0.3) for l, si, ti in zip(labels, s, t)]
    assert distillation_loss(labels, s, t, 3.0, 0.3) == pytest.approx(np.mean(each))
    assert distillation_loss(np.eye(3)[labels], s, t, 3.0, 0.3) == pytest.approx(np.mean(each))
    assert softmax(np.array([[0.0, 0.0]]), 5.0).tolist() == [[0.5, 0.5]]


def test_distiller_trains_the_student_only():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    t_out = keras.layers.Dropout(0.5)(keras.layers.Dense(3, name="t")(inp))
    teacher = keras.Model(inp, t_out)
    sin = keras.Input((4,))
    student = keras.Model(sin, keras.layers.Dense(3, name="s")(sin))
    model = distiller(student, teacher)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(32) % 3]
    t_before, s_before = teacher.get_weights(), student.get_weights()
    # in training mode the teacher still runs in inference mode (no dropout)
    np.testing.assert_allclose(model(x, training=True).numpy()[:, 3:], teacher(x, training=False).numpy(), atol=1e-6)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=DistillationLoss(3, temperature=2.0, alpha=0.5))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(teacher.get_weights(), t_before):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(student.get_weights(), s_before))


def test_bad_parameters_get_clear_errors():
    s = t = [[1.0, 0.0]]
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        distillation_loss([0], s, t, temperature=0.0)
    with pytest.raises(ValueError, match=r"alpha .* must be in \[0, 1\]"):
        distillation_loss([0], s, t, alpha=1.5)
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        distillation_loss([2], s, t)
    with pytest.raises(ValueError, match="must both be"):
        distillation_loss([0], s, [[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="num_classes"):
        DistillationLoss(1)
    with pytest.raises(ValueError, match="teacher_in must be"):
        DistillationLoss(3, teacher_in="teacher")
    a = keras.Model(i := keras.Input((3,)), keras.layers.Dense(2)(i))
    b = keras.Model(j := keras.Input((4,)), keras.layers.Dense(2)(j))
    with pytest.raises(ValueError, match="input"):
        distiller(a, b)


def test_shipped_sweep_and_students():
    """data/sweeps/distill.json (scripts/distill_sweep.py) and the shipped students."""
    from qlib import distill, results

    sweep = results.load("distill")
    base, teacher = sweep.one(run="labels"), sweep.one(run="teacher")
    assert base["alpha"] == 1.0 and base["temperature"] is None
    assert teacher["macs"] > 10 * base["macs"]
    for r in sweep:
        if r["run"] != "teacher":
            assert (r["epochs"], r["seed"], r["limit"]) == (base["epochs"], base["seed"], base["limit"])
            assert abs(r["int8"]["accuracy"] - r["accuracy"]) < 0.05
    shipped = distill.students()
    if any(r.get("limit") for r in sweep if r["run"] != "teacher"):  # reduced runs ship no students
        assert shipped == {}
        with pytest.raises(FileNotFoundError, match="distill_sweep.py"):
            distill.load_student("student_labels")
        return
    assert shipped["student_labels"]["run"] == "labels"
    best = max((r for r in sweep if r["temperature"] is not None), key=lambda r: r["accuracy"])
    assert shipped["student_distilled"]["run"] == best["run"]
    assert shipped["student_distilled"]["float_test_accuracy"] == best["accuracy"]


def test_precomputed_teacher_logits_train_the_student_like_the_live_teacher():
    """One SGD step through distiller() and one with the teacher's logits in y_true give the same student."""
    keras.utils.set_random_seed(0)
    teacher = keras.Model(i := keras.Input((4,)), keras.layers.Dense(3)(i))
    x = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(16) % 3]
    logits = teacher.predict(x, verbose=0)
    students = []
    for live in (True, False):
        keras.utils.set_random_seed(0)
        student = keras.Model(j := keras.Input((4,)), keras.layers.Dense(3)(j))
        start = student.get_weights()
        if live:
            model, target = distiller(student, teacher), y
            loss = DistillationLoss(3, temperature=3.0, alpha=0.4, label_smoothing=0.1)
        else:
            model, target = student, np.concatenate([y, logits], axis=1)
            loss = DistillationLoss(3, temperature=3.0, alpha=0.4, label_smoothing=0.1, teacher_in="y_true")
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
        model.fit(x, target, epochs=1, batch_size=16, shuffle=False, verbose=0)
        students.append(student.get_weights())
        assert not np.allclose(students[-1][0], start[0]), "the step must move the student"
    for a, b in zip(*students):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_teacher_logits_are_the_teachers_outputs_on_each_training_batch():
    """scripts/partiv_common.teacher_logits (one compiled predict per epoch) holds, for batch i of
    epoch e, the teacher's logits on exactly the augmented images that batch gives the student."""
    import sys
    from pathlib import Path

    scripts = str(Path(__file__).resolve().parents[1] / "scripts")
    sys.path.insert(0, scripts)
    try:
        from partiv_common import Batches, WithTeacher, logit_epochs, teacher_logits
    finally:
        sys.path.remove(scripts)
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    teacher = keras.Model(inp, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(inp))))
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-1, 1, (70, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 70)
    logits = teacher_logits(teacher, x, y, epochs=logit_epochs(2), batch_size=32, seed=5)
    assert logits.shape == (4, 70, 10)
    data = Batches(x, y, 32, 5)
    for e in range(4):
        for i in range(len(data)):
            xb, _ = data[i]
            np.testing.assert_allclose(logits[e, i * 32:i * 32 + len(xb)], np.asarray(teacher(xb)), atol=1e-5)
        data.on_epoch_end()
    assert not np.allclose(logits[0], logits[1])  # each epoch draws its own shifts and flips
    # a fit of 2 epochs asks for epochs Keras numbers its own way: logit_epochs(2) cover them, and
    # every batch comes with the logits of its own images
    seen = []

    class Checked(WithTeacher):
        def __getitem__(self, i):
            xb, yt = super().__getitem__(i)
            np.testing.assert_allclose(yt[:, 10:], np.asarray(teacher(xb)), atol=1e-5)
            seen.append(self.batches.epoch)
            return xb, yt

    student = keras.Model(inp2 := keras.Input((32, 32, 3)), keras.layers.Dense(20)(
        keras.layers.GlobalAveragePooling2D()(inp2)))
    student.compile("sgd", lambda yt, yp: keras.ops.mean((yt - yp) ** 2))
    student.fit(Checked(Batches(x, y, 32, 5), logits), epochs=2, verbose=0)
    assert max(seen) <= 4 and len(seen) >= 2 * 3
