"""Write the book's chapters as ``.ipynb`` notebooks: launch notebooks and student notebooks.

The chapters are MyST markdown notebooks (``book/*.md``). jupytext reads them; nbconvert's
preprocessors do the rest, so nothing here parses a notebook by hand.

``launch``  (``make notebooks``): ``notebooks/<chapter>.ipynb``, the whole chapter without outputs,
            with a first cell that fetches the book and installs it when the notebook runs on
            Colab (on Binder or a local set-up it does nothing). The launch buttons of the HTML book
            open these; they are committed, because Colab reads them from the repository, and
            ``tests/test_live.py`` checks that they match the chapters.
``student`` (``make student``): ``_build/student/<chapter>.ipynb``, the chapter without the
            exercises' solutions. The convention (README, "Writing exercises"): a solution sits
            between ``{solution-start}`` and ``{solution-end}`` in cells of its own (``+++`` before
            and after), its code cells and any markdown cell between them carry the tag
            ``solution``. nbconvert's ``TagRemovePreprocessor`` drops the tagged cells and its
            ``RegexRemovePreprocessor`` the markdown cells that open or close the solution.

Only the chapters listed in ``_toc.yml`` are written. Usage::

    python scripts/notebooks.py launch  --out notebooks
    python scripts/notebooks.py student --out _build/student
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml
from nbconvert.preprocessors import ClearOutputPreprocessor, RegexRemovePreprocessor, TagRemovePreprocessor

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_TAG = "solution"
# markdown cells that open (``{solution-start}`` first) or close (``{solution-end}`` anywhere) a solution
SOLUTION_FENCES = [r"\s*(```|:::)\{solution-start\}", r"(?s:.*)(```|:::)\{solution-end\}"]
COLAB_TAG = "colab-setup"


def config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def chapters() -> list[Path]:
    """The MyST notebooks of ``_toc.yml`` (pages with a jupytext header), in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        for part in node.get("parts", []):
            walk(part)
        for key in ("chapters", "sections"):
            for entry in node.get(key, []):
                if "file" in entry:
                    files.append(entry["file"])
                walk(entry)

    walk(toc)
    paths = [ROOT / (re.sub(r"\.md$", "", f) + ".md") for f in files]
    return [p for p in paths if p.read_text().startswith("---\njupytext:")]


def read(md: Path) -> nbformat.NotebookNode:
    nb = jupytext.read(md)
    nb.metadata.pop("jupytext", None)
    return nb


def _stable_ids(nb: nbformat.NotebookNode, stem: str) -> nbformat.NotebookNode:
    """Cell ids from the position, so that writing a notebook again gives the same file."""
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stem[:40]}-{i}"
    return nb


def colab_cell(repo_url: str, branch: str) -> nbformat.NotebookNode:
    """A first cell that sets the book up on Colab (and does nothing anywhere else)."""
    source = f'''# On Colab only: fetch the book and install what it needs (Binder and `make setup` have it all).
import os, subprocess, sys
if "google.colab" in sys.modules and not os.path.exists("/content/qbook"):
    subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", "{repo_url}", "/content/qbook"], check=True)
    apt = [l.split("#")[0].strip() for l in open("/content/qbook/binder/apt.txt")]
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *[p for p in apt if p]], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "/content/qbook/requirements.txt"], check=True)
    subprocess.run(["bash", "/content/qbook/binder/postBuild"], check=True)
    sys.path.insert(0, "/content/qbook")
    os.chdir("/content/qbook/book")'''
    return nbformat.v4.new_code_cell(source, metadata={"tags": [COLAB_TAG]})


#: The book build skips cells tagged so (the ipywidgets cells: a static page shows their code only,
#: and nbclient can wait a whole cell timeout for the reply to a widget cell, jupyter/nbclient#312);
#: a notebook is for running, so its cells lose the tag.
SKIP_TAG = "skip-execution"


def _runnable(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags")
        if tags and SKIP_TAG in tags:
            cell.metadata["tags"] = [t for t in tags if t != SKIP_TAG]
    return nb


def launch_notebook(md: Path) -> nbformat.NotebookNode:
    """The chapter as a notebook to open live: no outputs, a Colab set-up cell first."""
    cfg = config()["repository"]
    nb = _runnable(read(md))
    nb, _ = ClearOutputPreprocessor().preprocess(nb, {})
    nb.cells.insert(0, colab_cell(cfg["url"], cfg.get("branch", "main")))
    return _stable_ids(nb, md.stem)


def student_notebook(md: Path) -> nbformat.NotebookNode:
    """The chapter without its solutions: tagged cells and the solution fences removed."""
    nb = _runnable(read(md))
    nb, _ = TagRemovePreprocessor(remove_cell_tags={SOLUTION_TAG}).preprocess(nb, {})
    nb, _ = RegexRemovePreprocessor(patterns=SOLUTION_FENCES).preprocess(nb, {})
    return _stable_ids(nb, md.stem)


def dumps(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def write(kind: str, out: Path) -> list[Path]:
    make = {"launch": launch_notebook, "student": student_notebook}[kind]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for md in chapters():
        target = out / f"{md.stem}.ipynb"
        target.write_text(dumps(make(md)))
        written.append(target)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["launch", "student"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    written = write(args.kind, args.out)
    print(json.dumps({"kind": args.kind, "out": str(args.out), "notebooks": len(written)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
