# Two commands matter: `make demo` and `make test`. Both set up .venv from nothing.
# `make test-fast` is the contributor's loop: lint and every test not marked slow or heavy (no real
# TorchServe, gunicorn or Ray). `make test` is the whole suite, and what .ci/run calls.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A CPU build of torch installs from the registry in seconds; on a GPU machine install the
# CUDA build of your choice first (see README) and it is kept.
TORCH_SPEC ?= torch==2.13.0

# pytest with its rewritten test modules cached (__pycache__, ignored by git) even where the
# environment says PYTHONDONTWRITEBYTECODE: each of make test's three runs (and each xdist
# worker) collects every test file, 5 s more a collection without the cache on 2 cores.
PYTEST := PYTHONDONTWRITEBYTECODE= $(VENV)/bin/python -m pytest

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[server,torchserve,dev,ray]"
	@# System tools the tests use: Debian's Chromium for the report page's browser tests
	@# (playwright comes with the dev extra; its own browser download needs the network) and
	@# ffprobe, the reference the decoding tests compare every mode with. Installed when root,
	@# else the tests that need them skip, saying why.
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v ffprobe >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing) \
	      || echo "make install: could not install$$missing; the tests that need it will skip"; \
	  else \
	    echo "make install: missing$$missing and not root: the tests that need it will skip;" \
	      "install with: sudo apt-get install$$missing"; \
	  fi; \
	fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/vidcap caption sample_videos/shapes.mp4 --model tiny --out demo_out
	@echo
	@echo "outputs: demo_out/ (shapes.jsonl, shapes.srt, shapes.vtt, summary.json, thumbs/)"
	@head -n 5 demo_out/shapes.jsonl
	@echo "open demo_out/index.html in a browser: the folder as a page (captions, thumbnails, search)"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The whole suite: test-fast's tests and the `heavy` ones (over about a second each), then
# the slow ones: two at a time (a test file to a process, so its server starts once), then
# those marked `timed` one at a time: they measure themselves (latency, CPU, page timings)
# against an otherwise idle machine. (The heavy ones run test by test in the first run: as
# slow tests, a file to a process, the two processes waited for each other 2.5 min more.)
test: lint
	$(PYTEST) -q -m "not slow" -n 2
	$(PYTEST) -q -m "slow and not timed" -n 2 --dist loadfile
	$(PYTEST) -q -m "slow and timed"

# Two processes (pytest-xdist), one torch thread each (tests/conftest.py): two processes
# with torch on both cores each were slower on the 2-core machine. The `heavy` tests (a
# whole `vidcap caption` run or more) are left to make test.
test-fast: lint
	$(PYTEST) -q -m "not slow and not heavy" -n 2

bench: $(STAMP)
	$(PY) bench/run.py --model tiny --out bench/last_cpu_tiny.json
	$(PY) bench/bulk.py cpu --out bench/last_bulk_cpu.json

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache test-artifacts
