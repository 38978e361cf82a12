"""Chapter hygiene, checked on the sources: chapters use the chapter kit, not plumbing.

- no chapter reads ``data/`` by path: shipped results come from ``qlib.results.load(name)``, models
  from ``qlib.zoo``, photos and weights from ``qlib``'s loaders;
- no chapter builds a plotly figure inline: every figure is one call into ``qlib.plotting``;
- every ``{glue:...}`` reference in the prose has a ``glue(...)`` call (or a kit helper) behind it.
"""

import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("*.md"))


def _code(md: Path) -> str:
    """The code of a chapter's code cells."""
    return "\n".join(re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", md.read_text(), flags=re.S))


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_reads_data_by_path(md):
    code = _code(md)
    hits = re.findall(r"""["'](?:\.\./)*data/[^"']*["']""", code)
    assert not hits, f"{md.name} reads {hits} by path; use qlib.results.load(name) or a qlib loader"
    assert "json.load" not in code, f"{md.name} parses JSON itself; use qlib.results.load(name)"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_builds_a_figure_inline(md):
    code = _code(md)
    for pattern in (r"\bgo\.Figure\(", r"\bmake_subplots\(", r"plotly\.graph_objects", r"\bgo\.[A-Z]\w+\("):
        assert not re.search(pattern, code), f"{md.name} builds a plotly figure inline ({pattern}); " \
                                             "add a function to qlib.plotting and call it"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_glue_reference_is_glued(md):
    text = md.read_text()
    refs = set(re.findall(r"\{glue:(?:text|)\}`([A-Za-z0-9_]+)", text))
    code = _code(md)
    glued = set(re.findall(r"""glue\(\s*f?["']([A-Za-z0-9_]+)["']""", code))
    patterns = [re.sub(r"\\\{[^}]*\\\}", "[A-Za-z0-9_]+", re.escape(p))
                for p in re.findall(r"""glue\(\s*f["']([^"']+)["']""", code)]
    kit = "glue_values(" in code
    missing = sorted(r for r in refs - glued if not any(re.fullmatch(p, r) for p in patterns) and not kit)
    assert not missing, f"{md.name}: {missing} are referenced but never glued"


def test_the_checks_can_fail(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text('```{code-cell} ipython3\nimport plotly.graph_objects as go\n'
                   'x = json.loads(Path("../data/sweeps/bits.json").read_text())\nfig = go.Figure()\n```\n'
                   "{glue:text}`never_glued`\n")
    with pytest.raises(AssertionError):
        test_no_chapter_reads_data_by_path(bad)
    with pytest.raises(AssertionError):
        test_no_chapter_builds_a_figure_inline(bad)
    with pytest.raises(AssertionError):
        test_every_glue_reference_is_glued(bad)


def test_bibliography_parses_and_holds_every_cited_key():
    # a merge once dropped two closing braces: sphinxcontrib-bibtex then stops the whole build
    from pybtex.database import parse_file

    entries = parse_file(str(BOOK / "references.bib")).entries
    cited = {key.strip() for md in CHAPTERS for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", md.read_text())
             for key in group.split(",")}
    assert cited, "no chapter cites anything: the pattern is wrong"
    assert not cited - set(entries), f"cited but not in references.bib: {sorted(cited - set(entries))}"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_widget_cells_are_shown_not_run_in_the_book(md):
    """An ipywidgets cell needs a kernel: the static page shows its code only (``remove-output``),
    and the build skips it (``skip-execution``; nbclient can wait a whole cell timeout for its
    reply, jupyter/nbclient#312). The notebooks run it (scripts/notebooks.py drops the tag)."""
    for head, body in re.findall(r"```\{code-cell\}[^\n]*\n((?::[^\n]*\n)*)(.*?)```", md.read_text(), flags=re.S):
        if "widgets.interact" in body or "widgets.interactive" in body:
            assert "remove-output" in head and "skip-execution" in head, f"{md.stem}: {body[:60]!r}"
