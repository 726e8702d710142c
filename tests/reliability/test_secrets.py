"""A recognisable fake key appears nowhere: cache, cassette, logs, results, errors, tracebacks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bbox_lfm import Client, Query
from bbox_lfm.errors import AuthenticationError, BBoxError
from bbox_lfm.stores.jsonl import JSONLStore

# No "sk-" prefix: the key must be caught as the key it is, not merely by its shape.
KEY = "FAKEKEY-bboxlfm-7f3a9c2e51d84b06"


class _Echo(BaseHTTPRequestHandler):
    """A provider that refuses every key and quotes it back in full, headers and body."""

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization", "")
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {auth.split()[-1]}; you sent "
                                                f"'{auth}'", "type": "invalid_request_error",
                                     "param": None, "code": "invalid_api_key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo-Key", auth)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture()
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _files_containing(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_refused_key_is_in_no_error_traceback_or_log(echo_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Client(echo_url, api_key=KEY, provider="generic", model="m", cache_mode="off") as client:
        with pytest.raises(AuthenticationError) as info:
            client.send(Query(prompt="x", max_tokens=1))
        with pytest.raises(BBoxError) as info_models:
            client.models()
    for exc in (info.value, info_models.value):
        shown = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc.args)
        assert KEY not in shown, shown[-2000:]
    assert "Incorrect API key" in str(info.value)  # the provider's reason is kept, the key is not
    assert KEY not in caplog.text and all(KEY not in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_whole_run_writes_the_key_nowhere(local_server: Any, echo_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "BBOX_LFM_API_KEY": KEY, "BBOX_LFM_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    common = ["--task", "sample", "--provider", "bbox-lfm", "--model", local_server.model_id, "--no-progress"]
    ok = subprocess.run([sys.executable, "-m", "bbox_lfm.cli", "eval", *common, "--base-url", local_server.base_url,
                         "--out", str(tmp_path / "results.json")], env=env, capture_output=True, text=True,
                        timeout=600, check=False)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([sys.executable, "-m", "bbox_lfm.cli", "eval", *common, "--base-url", echo_url,
                              "--cache", str(tmp_path / "refused.sqlite"), "--out", str(tmp_path / "r2.json")],
                             env=env, capture_output=True, text=True, timeout=600, check=False)
    assert refused.returncode != 0 and "Incorrect API key" in refused.stderr
    # a cassette recorded through the same key
    with Client.local(local_server, api_key=KEY, cache=JSONLStore(tmp_path / "cassette.jsonl", secrets=[KEY])) as c:
        c.send(Query(prompt="It was", max_tokens=1))
        c.store.save()
    assert (tmp_path / "results.json").exists() and (tmp_path / "cassette.jsonl").exists()
    assert _files_containing(tmp_path, KEY) == []
    for out in (ok.stdout, ok.stderr, refused.stdout, refused.stderr):
        assert KEY not in out, out[-2000:]
