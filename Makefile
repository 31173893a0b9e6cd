# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Each creates what it needs. torch==2.13.0 is installed first: on these machines that pin is a local
# CPU build, while a bare `torch` requirement would pull several GB of CUDA wheels.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# transformers 4.56.2's sentencepiece ("slow") tokenizers are the tokenizer oracle. They need
# huggingface_hub<1, which cannot live beside transformers 5.23.0, so they get a venv of their own. Its
# question-answering pipeline (gone from transformers 5) is the qa oracle, and runs the model: torch there too.
ORACLE_VENV ?= .venv-tokenizer-oracle
# `make lint` needs ruff alone: a venv of its own, so linting never installs torch.
LINT_VENV ?= .venv-lint
RUFF_PATHS := core bigbird_cli tests

.PHONY: demo test lint completions

# The project alone for the demo; the tests' extras (transformers, Ray, matplotlib, ...: over a GB the demo
# never imports) on top of it for the tests.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(LINT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install -q 'ruff==0.17.6'
	touch $@

$(ORACLE_VENV)/.installed:
	$(PYTHON) -m venv $(ORACLE_VENV)
	$(ORACLE_VENV)/bin/python -m pip install -q torch==2.13.0
	$(ORACLE_VENV)/bin/python -m pip install -q transformers==4.56.2 sentencepiece protobuf
	touch $@

demo: $(VENV)/.installed
	$(PY) -m bigbird_cli.demo

test: $(VENV)/.installed-test $(ORACLE_VENV)/.installed
	$(VENV)/bin/ruff check $(RUFF_PATHS)
	$(VENV)/bin/ruff format --check $(RUFF_PATHS)
	BIGBIRD_TOKENIZER_ORACLE=$(CURDIR)/$(ORACLE_VENV)/bin/python PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
		$(PY) -m pytest -q tests

completions: $(VENV)/.installed
	$(PY) -c "from bigbird_cli.app import write_completions; write_completions()"

lint: $(LINT_VENV)/.installed
	$(LINT_VENV)/bin/ruff check $(RUFF_PATHS)
	$(LINT_VENV)/bin/ruff format --check $(RUFF_PATHS)
