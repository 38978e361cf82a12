"""Sphinx extension: launch buttons open the generated ``.ipynb`` notebooks, not the MyST sources.

sphinx-book-theme builds Binder/JupyterHub/Colab links to ``book/<page>.md``. Colab cannot open
markdown, so every launch link is pointed at ``notebooks/<page>.ipynb`` instead: the notebooks that
``make notebooks`` (``scripts/notebooks.py launch``) writes from the chapters and that are committed,
with a first cell that sets the book up when it runs on Colab. The repository itself is set once,
``repository.url`` in ``_config.yml``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

BOOK_DIR = "book"          # where the MyST chapters live (path_to_book is the repository root)
NOTEBOOK_DIR = "notebooks"  # where scripts/notebooks.py writes their .ipynb twins


def notebook_path(pagename: str) -> str:
    """``book/dfq`` -> ``notebooks/dfq.ipynb`` (the same rule as ``scripts/notebooks.py``)."""
    rel = PurePosixPath(pagename).relative_to(BOOK_DIR)
    return str(PurePosixPath(NOTEBOOK_DIR) / rel.with_suffix(".ipynb"))


def _retarget(app, pagename, templatename, context, doctree):
    if not pagename.startswith(BOOK_DIR + "/"):
        return
    source = app.env.doc2path(pagename, base=False)
    old = str(PurePosixPath(source))  # e.g. book/dfq.md, as the theme wrote it
    new = notebook_path(pagename)
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if "url" in button:
                button["url"] = button["url"].replace(old, new)


def setup(app):
    # after sphinx-book-theme's add_launch_buttons (priority 501)
    app.connect("html-page-context", _retarget, priority=600)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
