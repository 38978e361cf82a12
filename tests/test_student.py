"""Student notebooks (``make student``): one per chapter, no solution in them, and they run.

The notebooks are written by ``scripts/notebooks.py student`` (jupytext + nbconvert's tag and regex
preprocessors) into ``_build/student/``. The tests check the solution convention in the chapter
sources (so an author who forgets a tag hears about it here), that nothing of a solution reaches a
student, that nothing else is lost, and that the student notebooks run top to bottom in a
fresh kernel (nbclient), ipywidgets cells included. Executing the full chapters is the book build's
job (``execute_notebooks: force``); that no kept cell needs a solution is checked from the cells'
syntax, and one student notebook is executed for real, so ``make test`` runs each chapter once.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "student"
sys.path.insert(0, str(ROOT / "scripts"))
import notebooks  # noqa: E402  (scripts/notebooks.py)

pytestmark = pytest.mark.book
CHAPTERS = notebooks.chapters()
START, END = "{solution-start}", "{solution-end}"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def students():
    """What `make student` writes (written again here, so the test never reads a stale copy)."""
    written = notebooks.write("student", OUT)
    return {p.stem: nbformat.read(p, as_version=4) for p in written}


def _solution_cells(nb) -> list[int]:
    """Indices of the cells from a `{solution-start}` cell to its `{solution-end}` cell."""
    inside, found = False, []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and START in cell.source:
            inside = True
        if inside:
            found.append(i)
        if cell.cell_type == "markdown" and END in cell.source:
            inside = False
    return found


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_follows_the_solution_convention(md):
    """README, "Writing exercises": solutions in cells of their own, their cells tagged `solution`."""
    nb = notebooks.read(md)
    for i in _solution_cells(nb):
        cell = nb.cells[i]
        tags = cell.metadata.get("tags", [])
        where = f"{md.name}, cell {i}: {cell.source[:70]!r}"
        if cell.cell_type == "code":
            assert notebooks.SOLUTION_TAG in tags, f"{where}: a solution's code cell needs the tag `solution`"
        elif START in cell.source:
            assert re.match(notebooks.SOLUTION_FENCES[0], cell.source), (
                f"{where}: put `+++` before {START} so the solution starts a cell of its own")
        elif END in cell.source:
            assert re.search(r"(```|:::)\{solution-end\}[^\n]*\n(```|:::)\s*\Z", cell.source), (
                f"{where}: put `+++` after {END} so what follows is not dropped with the solution")
        else:
            assert notebooks.SOLUTION_TAG in tags, (
                f"{where}: markdown between two solution code cells needs `+++ {{\"tags\": [\"solution\"]}}`")


def test_every_chapter_has_a_student_notebook(students):
    assert set(students) == {md.stem for md in CHAPTERS}


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_has_no_solutions(students, md):
    full, student = notebooks.read(md), students[md.stem]
    removed = _solution_cells(full)
    solution_code = [full.cells[i].source for i in removed if full.cells[i].cell_type == "code"]
    text = "\n".join(c.source for c in student.cells)
    assert START not in text and END not in text
    for code in solution_code:
        assert code.strip() not in text, code[:80]
    assert not any(notebooks.SOLUTION_TAG in c.metadata.get("tags", []) for c in student.cells)
    # nothing but the solutions is lost: every other cell is there, in order
    kept = [c.source for i, c in enumerate(full.cells) if i not in set(removed)]
    assert [c.source for c in student.cells] == kept
    assert text.count("{exercise}") == "\n".join(c.source for c in full.cells).count("{exercise}")


def _names(source: str) -> tuple[set, set]:
    """(names a cell binds, names it reads), from its Python syntax tree (IPython magics skipped)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    bound, read = set(), set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return bound, read


def solution_dependencies(nb) -> list[str]:
    """Names a kept cell reads that only a removed solution cell (before it) binds."""
    removed = set(_solution_cells(nb))
    kept_bound, solution_bound, found = set(), set(), []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        bound, read = _names(cell.source)
        if i in removed or notebooks.SOLUTION_TAG in cell.metadata.get("tags", []):
            solution_bound |= bound - kept_bound
            continue
        found += [f"cell {i} reads `{n}`" for n in sorted(read & solution_bound - kept_bound - bound)]
        kept_bound |= bound
    return found


def test_dependency_check_catches_a_kept_cell_that_needs_a_solution():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("```{solution-start} ex\n```"),
        nbformat.v4.new_code_cell("answer = x + 1", metadata={"tags": ["solution"]}),
        nbformat.v4.new_markdown_cell("```{solution-end}\n```"),
        nbformat.v4.new_code_cell("print(answer, x)")])
    assert solution_dependencies(nb) == ["cell 4 reads `answer`"]
    nb.cells.insert(4, nbformat.v4.new_code_cell("answer = 0"))
    assert solution_dependencies(nb) == []


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_needs_nothing_from_a_solution(md):
    """Every cell a student keeps runs without the solutions: none reads a name only a solution binds.

    The book build executes every full chapter; with this check, the student notebook (the chapter
    less its solution cells) runs too. One student notebook is executed for real below.
    """
    assert solution_dependencies(notebooks.read(md)) == []


# executed for real: a chapter with ipywidgets controls and exercises (its student notebook ran in 23 s)
EXECUTED = "quantization_fundamentals"


def test_student_notebook_runs_top_to_bottom(students):
    """A fresh kernel runs a whole student notebook (the exercises' answers are left to the student)."""
    from nbclient import NotebookClient

    md = next(p for p in CHAPTERS if p.stem == EXECUTED)
    nb = students[md.stem]
    # a widget cell's reply can arrive only when its timeout runs out (jupyter/nbclient#312): give
    # those cells (well under a second of work) 30 s, the others 600
    NotebookClient(nb, timeout_func=lambda cell: 30 if "ipywidgets" in cell.source else 600,
                   kernel_name="python3", resources={"metadata": {"path": str(md.parent)}}).execute()
    assert not any("skip-execution" in c.metadata.get("tags", []) for c in nb.cells), "the notebook skips a cell"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert re.search(r"^import ipywidgets|^from ipywidgets", md.read_text(), flags=re.M)
    views = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if WIDGET_VIEW in o.get("data", {})]
    assert views, "the ipywidgets cells made no widget"
