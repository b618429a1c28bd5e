# lipsyncctl — developer entry points. `make demo` and `make test` are the README's two set-up commands.
# empty: scripts/bootstrap.sh's default (torch==2.13.0); set it (or TORCH_INDEX_URL) to choose a new .venv's build
TORCH_SPEC ?=
EXTRAS ?= dev
PY := .venv/bin/python
DEMO_OUT ?= out/demo

.PHONY: setup test demo man bench lint clean

setup:
	TORCH_SPEC="$(TORCH_SPEC)" EXTRAS="$(EXTRAS)" bash scripts/bootstrap.sh

test: setup
	$(PY) -m pytest -q -n 2

demo: setup
	bash scripts/demo.sh "$(DEMO_OUT)"

man:
	$(PY) scripts/gen_man.py

bench: setup
	$(PY) -m pytest -q -s -m bench tests/bench

lint:
	$(PY) -m ruff check lipsyncctl tests scripts

clean:
	rm -rf out .pytest_cache
