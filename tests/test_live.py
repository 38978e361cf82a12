"""Running the book live: JupyterLab opens the chapters as notebooks, Binder builds the same environment,
and the launch buttons' notebooks match the chapters.

``jupyter lab`` is started for real (no browser) and asked for a chapter through its contents API,
the way the JupyterLab UI asks when a student double-clicks ``book/<chapter>.md``. Binder's recipe
(``binder/``) is checked with repo2docker's own ``--no-build`` dry run: the Dockerfile it would
build must install the Debian packages, the pinned requirements and run ``binder/postBuild``.
That the chapters *execute* as notebooks is checked by the book build (every chapter, through
jupytext and nbclient, ``execute_notebooks: force``) and, solutions removed, by
``tests/test_student.py``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
import notebooks  # noqa: E402  (scripts/notebooks.py)

pytestmark = pytest.mark.book
CHAPTERS = notebooks.chapters()


def _run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, **kw)


def test_jupyter_lab_is_installed_with_jupytext_and_widgets():
    out = _run(str(BIN / "jupyter"), "lab", "--version")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"4\.\d+\.\d+", out.stdout.strip())
    ext = _run(str(BIN / "jupyter"), "labextension", "list")
    listing = ext.stdout + ext.stderr
    for name in ("jupyterlab-jupytext", "@jupyter-widgets/jupyterlab-manager", "jupyterlab-plotly"):
        assert re.search(rf"{re.escape(name)} v\S+ .*enabled.*OK", listing), f"{name} missing:\n{listing}"


def test_setup_installed_the_kernel_and_lab_settings():
    """binder/postBuild copied the kernel's logging set-up and the jupytext default viewer."""
    prefix = Path(sys.prefix)
    kernel = prefix / "etc" / "ipython" / "ipython_kernel_config.py"
    assert kernel.read_text() == (ROOT / "binder" / "ipython_kernel_config.py").read_text()
    lab = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    settings = json.loads(lab.read_text())
    viewers = settings["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["markdown"] == "Jupytext Notebook"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A real JupyterLab server on localhost, rooted at the repository, no browser."""
    port, token = _free_port(), secrets.token_hex(16)
    log = (tmp_path_factory.mktemp("lab") / "lab.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "jupyter"), "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {Path(log.name).read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not start in 60 s")
        yield base, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_lab_opens_each_chapter_as_a_notebook(lab, md):
    """What the UI does on opening book/<chapter>.md with the Jupytext Notebook viewer."""
    base, token = lab
    rel = md.relative_to(ROOT).as_posix()
    with urllib.request.urlopen(f"{base}/api/contents/{rel}?type=notebook&content=1&token={token}",
                                timeout=60) as r:
        model = json.load(r)
    assert model["type"] == "notebook"
    nb = nbformat.from_dict(model["content"])
    nbformat.validate(nb)
    expected = len(re.findall(r"^```\{code-cell\}", md.read_text(), flags=re.M))
    assert sum(c.cell_type == "code" for c in nb.cells) == expected
    assert nb.metadata["kernelspec"]["name"] == "python3"


# --- launch buttons: the committed notebooks -------------------------------------------------

@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_launch_notebook_matches_the_chapter(md):
    committed = ROOT / "notebooks" / f"{md.stem}.ipynb"
    assert committed.exists(), f"{committed.name} missing: run `make notebooks` and commit notebooks/"
    assert committed.read_text() == notebooks.dumps(notebooks.launch_notebook(md)), (
        f"notebooks/{committed.name} is out of date with {md.name}: run `make notebooks` and commit")


def test_launch_notebooks_set_up_colab_from_the_one_repository_url():
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    for md in CHAPTERS:
        nb = nbformat.read(ROOT / "notebooks" / f"{md.stem}.ipynb", as_version=4)
        first = nb.cells[0]
        assert notebooks.COLAB_TAG in first.metadata["tags"]
        assert repo["url"] in first.source and "binder/postBuild" in first.source
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    # the URL is written nowhere else in the repository's set-up files
    for f in ["Makefile", "binder/postBuild", "scripts/notebooks.py", "book/_ext/qbook_launch.py"]:
        assert repo["url"] not in (ROOT / f).read_text(), f


def test_no_stray_launch_notebooks():
    names = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert names == {md.stem for md in CHAPTERS}


# --- Binder -----------------------------------------------------------------------------------

def _apt_txt() -> list[str]:
    lines = (ROOT / "binder" / "apt.txt").read_text().splitlines()
    return [pkg for line in lines if (pkg := line.split("#")[0].strip())]


def test_binder_requirements_are_the_pinned_ones():
    lines = [l.strip() for l in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines == ["-r ../requirements.txt"]
    python = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert python == f"python-{sys.version_info.major}.{sys.version_info.minor}", (
        "binder/runtime.txt should name the Python the project is tested with")


def test_makefile_installs_the_same_debian_packages():
    out = _run("make", "-n", "-B", "system-packages")
    assert out.returncode == 0, out.stderr
    for pkg in _apt_txt():
        assert pkg in out.stdout, pkg
    assert "binder/apt.txt" in (ROOT / "Makefile").read_text()
    assert "binder/postBuild" in (ROOT / "Makefile").read_text()  # the same post-install steps


def test_repo2docker_would_build_the_book_environment(tmp_path):
    """repo2docker's dry run (no Docker needed) writes the Dockerfile Binder would build."""
    r2d = BIN / "jupyter-repo2docker"
    assert r2d.exists(), "jupyter-repo2docker is missing: run `make setup`"
    out = subprocess.run([str(r2d), "--no-build", "--no-run", "--debug", "--user-name", "jovyan",
                          "--user-id", "1000", str(ROOT)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    dockerfile = out.stdout + out.stderr
    python = (ROOT / "binder" / "runtime.txt").read_text().strip().removeprefix("python-")
    assert f"python={python}" in dockerfile
    install = re.search(r"apt-get install --yes --no-install-recommends ([^&]+)&&", dockerfile)
    assert install and sorted(install.group(1).split()) == sorted(_apt_txt())
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in dockerfile
    assert "RUN ./binder/postBuild" in dockerfile
    # postBuild is a script that runs on its own (bash -n: it parses)
    assert subprocess.run(["bash", "-n", str(ROOT / "binder" / "postBuild")]).returncode == 0
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)
