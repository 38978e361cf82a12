"""Sphinx extension: the HTML book works with no network, and its pages log no JavaScript errors.

* MathJax 3, require.js and the Jupyter widget manager come from pinned npm packages
  (``package.json``/``package-lock.json``, installed by ``make setup`` with ``npm ci``) and are copied
  into ``_static``. ``_config.yml`` points ``mathjax_path`` and ``nb_ipywidgets_js`` at the copies,
  so no page asks a CDN for anything (a reader on a train, a class behind a firewall).
* Page CSS (``_static/qbook.css``): a plotly dropdown that opens past the bottom of its figure stays
  above the text that follows, so every entry can be clicked.
* A script registered twice is written once per page: sphinx-thebe and sphinx-togglebutton add
  theirs again on every read, and a second ``const THEBE_JS_URL`` is a SyntaxError in the browser.

``tests/test_book.py`` checks both in a real browser: no console errors, no request leaves the machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.errors import ExtensionError

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "node_modules"

# destination under _static -> (source under node_modules, file patterns to copy)
ASSETS = {
    "mathjax": ("mathjax/es5", ["**/*"]),
    "require.js": ("requirejs/require.js", None),
    "jupyter-widgets": ("@jupyter-widgets/html-manager/dist",
                        ["embed-amd.js", "*.woff", "*.woff2", "*.ttf", "*.eot", "*.svg"]),
}


# The widget manager is a RequireJS module that finds its fonts next to its own module URL, which
# RequireJS would put in the page's folder: point that URL at _static/jupyter-widgets/. Listed in
# nb_ipywidgets_js between require.js and embed-amd.js.
WIDGET_PATHS_JS = """// written by book/_ext/qbook_offline.py
require.config({paths: {"@jupyter-widgets/html-manager/dist": new URL("_static/jupyter-widgets",
  new URL(document.documentElement.dataset.content_root || "./", document.baseURI)).href}});
"""


QBOOK_CSS = """/* written by book/_ext/qbook_offline.py */
/* plotly draws an open dropdown below its figure: keep it above the next heading or paragraph
   (below the theme's sticky headers, z-index 1020+) */
div.qbook-plotly { position: relative; z-index: 5; }
/* a long URL in a reference breaks anywhere rather than widening a phone's page */
div.citation, div.citation a { overflow-wrap: anywhere; }
"""


def _sources() -> dict[str, Path]:
    found = {dst: NODE_MODULES / src for dst, (src, _) in ASSETS.items()}
    missing = [str(p.relative_to(ROOT)) for p in found.values() if not p.exists()]
    if missing:
        raise ExtensionError(
            f"qbook_offline: {', '.join(missing)} not found. The book serves MathJax, require.js and "
            "the widget manager from npm packages: run `make setup` (or `npm ci` in the repository).")
    return found


def _check_assets(app):
    _sources()  # fail early, before the chapters execute


def _copy_assets(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    for dst, src in _sources().items():
        target = static / dst
        patterns = ASSETS[dst][1]
        if patterns is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            continue
        for pattern in patterns:
            for f in src.glob(pattern):
                if f.is_file():
                    out = target / f.relative_to(src)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, out)
    (static / "jupyter-widgets" / "paths.js").write_text(WIDGET_PATHS_JS)
    (static / "qbook.css").write_text(QBOOK_CSS)


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    """Keep the first of identical script entries (same file or body, same attributes)."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in scripts:
        # the builder's copy has filename '' where the registry's has None: same script
        key = (getattr(js, "filename", js) or "", getattr(js, "priority", 500),
               tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept


def setup(app):
    app.connect("builder-inited", _check_assets)
    app.add_css_file("qbook.css")
    # after every extension's html-page-context handler (myst-nb adds the widget scripts there)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("build-finished", _copy_assets)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
