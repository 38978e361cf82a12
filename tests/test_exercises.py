"""The exercises and their checkers (``qlib.exercises``).

- every checker accepts its own reference answer, and rejects a wrong answer and a wrong type with
  a message (never an exception); common mistakes get a message that names them;
- the book and the checkers match: every checker belongs to an ``{exercise}`` of some chapter, the
  solution of every checked exercise calls ``check("<label>", ...)`` and its text tells the student
  how; every chapter has 2-4 exercises with unique labels and gated solutions tagged ``solution``;
- in the rendered book (when built), every solution's check says "Right".
"""

import math
import re
from pathlib import Path

import numpy as np
import pytest

from qlib import exercises
from qlib.exercises import Feedback, check, labels, reference

ROOT = Path(__file__).resolve().parents[1]
#: pages that are not chapters: the introduction and the back matter (no exercises there)
NOT_CHAPTERS = ("intro", "references", "notation", "glossary", "running")
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md") if p.stem not in NOT_CHAPTERS)
#: the book's checkers, read at collection time: the docstring examples register ``ex-demo-*`` ones later
LABELS = [label for label in labels() if not label.startswith("ex-demo-")]


def _exercises(text: str) -> list[str]:
    return re.findall(r"```\{exercise\}\n:label: (\S+)", text)


def _solution(text: str, label: str) -> str:
    m = re.search(r"```\{solution-start\} " + re.escape(label) + r"\n(.*?)```\{solution-end\}", text, flags=re.S)
    assert m, f"exercise {label!r} has no gated solution ({{solution-start}} {label} ... {{solution-end}})"
    return m.group(1)


def _exercise_text(text: str, label: str) -> str:
    return re.search(r"```\{exercise\}\n:label: " + re.escape(label) + r"\n(.*?)```", text, flags=re.S).group(1)


BOOK = {md.stem: md.read_text() for md in CHAPTERS}
EXERCISES = {label: stem for stem, text in BOOK.items() for label in _exercises(text)}


def _wrong(answer):
    """A wrong answer of the same shape: numbers moved by a quarter, one item of a tuple or dict."""
    if isinstance(answer, dict):
        key = next(iter(answer))
        return {**answer, key: _wrong(answer[key])}
    if isinstance(answer, tuple):
        return (_wrong(answer[0]),) + answer[1:]
    if isinstance(answer, (int, np.integer)):
        return int(answer) + 1
    return np.asarray(answer, dtype=np.float64) * 1.25 + 0.01


@pytest.fixture(scope="module", params=LABELS)
def ref(request):
    return request.param, reference(request.param)


def test_every_checker_accepts_its_reference(ref):
    label, expected = ref
    fb = check(label, expected)
    assert isinstance(fb, Feedback) and fb.correct, f"{label}: {fb}"
    assert fb.message


def test_every_checker_rejects_a_wrong_answer(ref):
    label, expected = ref
    fb = check(label, _wrong(expected))
    assert isinstance(fb, Feedback) and not fb.correct, f"{label} accepted {_wrong(expected)!r}"
    assert len(fb.message) > 10


@pytest.mark.parametrize("bad", [None, "seven", {"a": 1}, [[1.0, 2.0], [3.0]], float("nan")],
                         ids=["None", "str", "dict", "ragged", "nan"])
def test_every_checker_rejects_wrong_types_with_a_message(bad):
    for label in LABELS:
        fb = check(label, bad)
        assert isinstance(fb, Feedback) and not fb.correct, f"{label} accepted {bad!r}"
        assert fb.message, label


def _wald():
    from qlib.zoo import manifest

    p = manifest()["v1_standard"]["float_test_accuracy"]
    half = 1.96 * math.sqrt(p * (1 - p) / 10_000)
    return p - half, p + half


def _kernel_stats(name):
    return exercises.imagenet_depthwise()[name][1]


@pytest.mark.parametrize("label, wrong, words", [
    ("ex-fundamentals-scale", lambda r: (r[0] * 255 / 127, r[1]), "qmax - qmin"),
    ("ex-fundamentals-scale", lambda r: (r[0] * 255 / 256, r[1]), "255 steps"),
    ("ex-fundamentals-scale", lambda r: (r[0], r[1] + 128), "unsigned"),
    ("ex-fundamentals-scale", lambda r: (r[0], r[1] + 0.4), "integer"),
    ("ex-fundamentals-ties", lambda r: 1.5 / 128, "both rules"),
    ("ex-fundamentals-ties", lambda r: 0.3, "not exactly halfway"),
    ("ex-fundamentals-db-per-bit", lambda r: 20 * math.log10(2), "textbook"),
    ("ex-networks-macs", lambda r: 1 / r, "upside down"),
    ("ex-networks-wilson", lambda r: _wald(), "Wald"),
    ("ex-ranges-bits-needed", lambda r: 8, "fewer than four levels"),
    ("ex-ranges-bits-needed", lambda r: r + 2, "fewer bits suffice"),
    ("ex-zero-prune", lambda r: 2 ** r, "log2"),
    ("ex-bn-fold-by-hand", lambda r: r * math.sqrt(1e-5 / 1e-3), "1e-3"),
    ("ex-bn-eps-live", lambda r: 1e-3, "still channel"),
    ("ex-bn-eps-live", lambda r: 0.5, "slider"),
    ("ex-setting-clip", lambda r: 1.0, "more than"),
    ("ex-bits-weights-vs-acts", lambda r: -r, "sign"),
    ("ex-bits-weights-vs-acts", lambda r: 100 * r, "percent"),
    ("ex-dfq-equalize", lambda r: 1 / r, "1/s"),
    ("ex-dfq-equalize", lambda r: r ** 2, "square"),
    ("ex-dfq-bias-correction", lambda r: -r, "sign"),
    ("ex-dfq-bias-correction", lambda r: exercises.bias_correction(clipped=False), "clipped normal"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_common_mistakes_are_named(label, wrong, words):
    fb = check(label, wrong(reference(label)))
    assert not fb.correct and words in fb.message, f"{label}: {fb}"


def test_the_fold_scale_checker_names_a_missing_square_root():
    stats = _kernel_stats("expanded_conv_depthwise")
    c = int(np.argmin(stats["variance"]))
    fb = check("ex-bn-fold-by-hand", stats["gamma"][c] / (stats["variance"][c] + 1e-5))
    assert not fb.correct and "square root" in fb.message


def test_the_numpy_weights_match_the_keras_port_in_shape_and_order():
    """The checkers read the ImageNet depthwise layers from the state dict; the chapters from Keras."""
    dw = exercises.imagenet_depthwise()
    assert list(dw)[:2] == ["expanded_conv_depthwise", "block_1_depthwise"] and len(dw) == 17
    assert [k.shape[-1] for k, _ in dw.values()][:4] == [32, 96, 144, 144]
    assert all(k.shape[:2] == (3, 3) for k, _ in dw.values())


def test_every_checker_belongs_to_an_exercise_in_the_book():
    missing = sorted(set(LABELS) - set(EXERCISES))
    assert not missing, f"checkers without an {{exercise}} in any chapter: {missing}"


@pytest.mark.parametrize("stem", sorted(BOOK))
def test_every_checked_exercise_is_checked_in_its_solution(stem):
    text = BOOK[stem]
    for label in _exercises(text):
        if label in LABELS:
            assert re.search(r"""check\(\s*["']""" + re.escape(label) + r"""["']\s*,""", _solution(text, label)), \
                f"{stem}: the solution of {label} does not call check({label!r}, ...)"
            assert f'check("{label}"' in _exercise_text(text, label), \
                f"{stem}: the exercise {label} does not tell the student how to check an answer"


@pytest.mark.parametrize("stem", sorted(BOOK))
def test_every_chapter_has_two_to_four_gated_exercises(stem):
    text = BOOK[stem]
    found = _exercises(text)
    assert 2 <= len(found) <= 4, f"{stem} has {len(found)} exercises; the book wants 2-4 per chapter"
    for label in found:
        assert label.startswith("ex-"), label
        solution = _solution(text, label)
        assert re.search(r"```\{solution-start\} " + re.escape(label) + r"\n:class: dropdown", text), label
        cells = re.findall(r"```\{code-cell\}[^\n]*\n(:tags: \[[^\]]*\])?", solution)
        assert all("solution" in (tags or "") for tags in cells), f"{label}: tag its solution code cells `solution`"


def test_exercise_labels_are_unique():
    every = [label for text in BOOK.values() for label in _exercises(text)]
    assert len(every) == len(set(every)), sorted({x for x in every if every.count(x) > 1})


def test_the_book_checks_can_fail():
    text = ('```{exercise}\n:label: ex-x\n\nNo hint.\n```\n\n```{solution-start} ex-x\n:class: dropdown\n```\n\n'
            '```{code-cell} ipython3\nprint(1)\n```\n\n```{solution-end}\n```\n')
    assert _exercises(text) == ["ex-x"]
    assert "check(" not in _solution(text, "ex-x") and 'check("ex-x"' not in _exercise_text(text, "ex-x")
    assert re.findall(r"```\{code-cell\}[^\n]*\n(:tags: \[[^\]]*\])?", _solution(text, "ex-x")) == [""]
    assert not check(LABELS[0], _wrong(reference(LABELS[0])))


@pytest.mark.book
def test_every_rendered_solution_check_says_right():
    """In the built HTML, each solution's check shows **Right.**, and no page shows **Not yet.**."""
    import os

    html_dir = ROOT / "_build" / "html" / "book"
    if not (html_dir / "quantization_fundamentals.html").exists():
        if os.environ.get("QBOOK_REQUIRE_BOOK"):
            pytest.fail("the book is not built: run `make book` first")
        pytest.skip("the book is not built (run `make book`)")
    failing, short = [], []
    for stem, text in BOOK.items():
        html = (html_dir / f"{stem}.html").read_text()
        checked = [label for label in _exercises(text) if label in LABELS]
        if "<strong>Not yet.</strong>" in html:
            failing.append(stem)
        if html.count("<strong>Right.</strong>") < len(checked):
            short.append(f"{stem}: {html.count('<strong>Right.</strong>')} of {len(checked)}")
    assert not failing, f"a solution fails its own checker on {failing}"
    assert not short, f"fewer verdicts shown than checked exercises: {short}"


def test_solutions_show_the_verdict_not_a_printed_repr():
    """A check() inside print() shows ``Feedback(right: ...)``, not the rendered **Right.**: the
    verdict must be a cell's last expression (a line of its own)."""
    bad = [f"{stem}: {line.strip()}" for stem, text in BOOK.items() for line in text.splitlines()
           if re.search(r"print\(.*\bcheck\(", line)]
    assert not bad, bad
