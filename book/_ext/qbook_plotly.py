"""Sphinx extension: serve plotly.js from the installed plotly package, once per page.

Figures are emitted as ``text/html`` without plotly.js (qlib.plotting's ``qbook`` renderer), so
every page loads the same local copy (no CDN: the book works offline) before its figures run.
"""

import shutil
from pathlib import Path

import plotly


def _copy_plotly(app, exception):
    if exception is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", static / "plotly.min.js")
        # wraps and shrinks titles, subplot titles and legends that collide (e.g. at phone width)
        shutil.copyfile(Path(__file__).parent / "qbook_plotly_fit.js", static / "qbook_plotly_fit.js")


def setup(app):
    # keep plotly from re-typesetting the page's MathJax 3 (jupyter-book issues 1528, 1702)
    app.add_js_file(None, body="window.PlotlyConfig = {MathJaxConfig: 'local'};", priority=200)
    app.add_js_file("plotly.min.js", priority=201)
    app.add_js_file("qbook_plotly_fit.js", priority=202)
    app.connect("build-finished", _copy_plotly)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
