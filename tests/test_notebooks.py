"""Every notebook in ``notebooks/`` runs top to bottom against its committed cassette.

No model and no network: each notebook's queries replay from ``notebooks/cassettes/<name>.jsonl``
(through :func:`bbox_lfm.testing.cassette_client`). Before the notebook's first cell, the kernel
runs a guard that makes any network connection and any local-server start fail, so a notebook
that reaches out fails its test. Notebooks are committed without outputs and their cassettes
are small. Recording a notebook's cassette: run it with ``BBOX_LFM_RECORD=1`` (see
``notebooks/README.md``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra: pip install -e .[notebooks]")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra: pip install -e .[notebooks]")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CASSETTES = ROOT / "notebooks" / "cassettes"
CELL_TIMEOUT_S = 120  # one cell; the notebook as a whole gets NOTEBOOK_TIMEOUT_S
NOTEBOOK_TIMEOUT_S = 150
CASSETTES_MAX_BYTES = 3_000_000  # all cassettes together: the repository stays small

NO_NETWORK = ("test_notebooks: this notebook tried to reach the network; outside recording its queries must replay"
              " from its cassette")
NO_MODEL = ("test_notebooks: this notebook tried to start the local server (load a model); outside recording it"
            " must replay from its cassette")
GUARD = f'''
import socket as _socket

def _no_network(*args, **kwargs):
    raise OSError({NO_NETWORK!r})

_socket.socket.connect = _no_network
_socket.create_connection = _no_network

import bbox_lfm.serve as _serve
import bbox_lfm.serve.local as _serve_local

def _no_model(*args, **kwargs):
    raise RuntimeError({NO_MODEL!r})

_serve.start_local = _serve_local.start_local = _no_model
del _no_network, _no_model, _serve, _serve_local, _socket
'''


def execute(path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path, *, allow_errors: bool = False) -> Any:
    """Run the notebook at ``path`` in a fresh kernel, guard first; return the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD))
    monkeypatch.delenv("BBOX_LFM_RECORD", raising=False)  # replay, whatever the shell says
    monkeypatch.setenv("BBOX_LFM_CACHE_DIR", str(cache_dir))  # a client outside the cassette finds nothing
    monkeypatch.setenv("BBOX_LFM_CACHE_MODE", "replay")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # local models (a MiniLM student, RLPrompt's policy) on one intra-op thread: on the shared
    # 2-core machine two threads contend (measured: 06_rlprompt 149 s on two, 39 s on one)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=allow_errors,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
def test_notebook_runs_from_its_cassette(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cassette = CASSETTES / f"{path.stem}.jsonl"
    assert cassette.is_file(), f"{path.name} needs its cassette {cassette.relative_to(ROOT)} (record it, see the docstring)"
    t0 = time.perf_counter()
    nb = execute(path, monkeypatch, tmp_path)
    wall = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", ()) if o.output_type == "error"]
    assert not errors and wall < NOTEBOOK_TIMEOUT_S


def test_the_guard_fails_a_notebook_that_reaches_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=1)"),
                nbformat.v4.new_code_cell("from bbox_lfm.serve import start_local\nstart_local()")]
    path = tmp_path / "reaches_out.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="tried to reach the network"):
        execute(path, monkeypatch, tmp_path)
    ran = execute(path, monkeypatch, tmp_path, allow_errors=True)
    errors = [o.evalue for c in ran.cells[1:] for o in c.outputs if o.output_type == "error"]
    assert errors == [f"<urlopen error {NO_NETWORK}>", NO_MODEL]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


def test_cassettes_are_small() -> None:
    total = sum(p.stat().st_size for p in CASSETTES.glob("*.jsonl"))
    assert total <= CASSETTES_MAX_BYTES, f"notebook cassettes take {total / 1e6:.1f} MB; keep recordings small"
