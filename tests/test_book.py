"""The rendered HTML book: every figure cell carries its plotly figure, and a real browser draws it.

These tests read ``_build/html`` (``make book``). ``make test`` builds the book first and sets
QBOOK_REQUIRE_BOOK=1, so a missing build fails instead of skipping.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHAPTERS = sorted((ROOT / "book").glob("*.md"))

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def built():
    if not (HTML / "index.html").exists():
        if os.environ.get("QBOOK_REQUIRE_BOOK"):
            pytest.fail("the book is not built: run `make book` first")
        pytest.skip("the book is not built (run `make book`)")
    return HTML


def _figure_cells(md: Path) -> int:
    """Code cells tagged `figure` in a chapter's source."""
    return len(re.findall(r"```\{code-cell\}[^\n]*\n:tags: \[[^\]]*\bfigure\b", md.read_text()))


def _html(md: Path) -> str:
    return (HTML / "book" / (md.stem + ".html")).read_text()


def test_every_chapter_is_built(built):
    toc = (ROOT / "_toc.yml").read_text()
    for name in re.findall(r"file: book/(\w+)", toc) + re.findall(r"root: book/(\w+)", toc):
        assert (built / "book" / f"{name}.html").exists(), name


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_cell_has_plotly_data(built, md):
    expected = _figure_cells(md)
    html = _html(md)
    cells = re.findall(r'<div class="cell [^"]*\btag_figure\b[^"]*"(.*?)(?=<div class="cell |<section|</article)',
                       html, flags=re.S)
    assert len(cells) == expected
    for cell in cells:
        assert "Plotly.newPlot" in cell and '"data":' in cell.replace("\\u0022", '"'), cell[:300]
    if expected:
        assert "_static/plotly.min.js" in html  # plotly.js is served locally (no CDN)


def test_no_error_output_in_pages(built):
    for md in CHAPTERS:
        html = _html(md)
        assert "Traceback (most recent call last)" not in html, md.name
        assert "output_error" not in html and "text_plain output_error" not in html, md.name


def test_glued_numbers_are_rendered(built):
    html = _html(ROOT / "book" / "quantization_fundamentals.md")
    assert "pending_xref" not in html and "glue:" not in html
    # the glued per-tensor channel count appears in prose as a number
    assert re.search(r"Per tensor, <span class=\"pasted-text\">\d+</span> of the", html)


@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("QBOOK_REQUIRE_BOOK"),
                    reason="chromium not installed (make setup installs it)")
def test_browser_draws_every_figure(built, tmp_path):
    """Headless Chromium loads each page offline and plotly draws an SVG per figure."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: run `make setup`"
    for md in CHAPTERS:
        expected = _figure_cells(md)
        if not expected:
            continue
        page = built / "book" / f"{md.stem}.html"
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom",
             page.as_uri()],
            capture_output=True, text=True, timeout=120,
        ).stdout
        drawn = len(re.findall(r'class="plot-container plotly"', dom))
        assert drawn == expected, f"{md.name}: {drawn} of {expected} figures drawn"
        assert dom.count('class="main-svg"') >= expected
