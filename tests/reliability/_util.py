"""Helpers shared by the reliability tests and benchmarks/reliability.py."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bbox_lfm import Client
from bbox_lfm.errors import BBoxError
from bbox_lfm.profiles import load_profile
from bbox_lfm.testing.faults import FaultProxy


def fast_sleep(seconds: float) -> None:
    """The retry layer's waits, capped: the faults are the point, not the back-off."""
    time.sleep(min(seconds, 0.02))


def local_client(base_url: str, model_id: str, cache: Path | None, *, max_batch: int = 4, timeout: float = 30.0,
                 **kw: Any) -> Client:
    """A client for the local server (or a proxy in front of it) that sends ``max_batch`` prompts
    per request, so that a small run makes enough requests for every kind of fault."""
    profile = load_profile("bbox-lfm")
    profile = dataclasses.replace(profile, capabilities=dataclasses.replace(profile.capabilities, max_batch=max_batch))
    kw.setdefault("sleep", fast_sleep)
    return Client.local(base_url, model_id=model_id, provider=profile, cache=cache,
                        cache_mode="readwrite" if cache is not None else "off", timeout=timeout, **kw)


def comparable(result: Any) -> dict[str, Any]:
    """A results file less what may differ between a clean and a faulty run (times, retries)."""
    data = result.to_json() if hasattr(result, "to_json") else dict(result)
    for key in ("wall_s", "commit"):
        data.pop(key, None)
    data["extra"] = {k: v for k, v in data["extra"].items() if k != "fit_s"}
    for key in ("budget_spent", "eval_spent"):
        data[key] = {k: v for k, v in data[key].items() if k != "retries"}
    return data


def rss_mb() -> float:
    """This process's resident memory in MiB (the in-process server's included)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(base_url: str, model_id: str, *, clients: int, rounds: int, per_round: int) -> dict[str, Any]:
    """``clients`` threads, each with a client of its own, send ``per_round`` scoring requests
    per round (new prompts every time, no cache); memory is read after each round."""
    import statistics
    import threading

    from bbox_lfm import Query

    latencies: list[float] = []
    errors: list[str] = []
    rss = [rss_mb()]
    lock = threading.Lock()
    conns = [local_client(base_url, model_id, None, max_batch=1, timeout=600, max_attempts=1)
             for _ in range(clients)]
    words = ["good", "bad", "fine", "dull", "great", "awful", "odd", "new"]

    def worker(c: int, r: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        for k in range(per_round):
            text = f"Review {r}-{c}-{k}: a {words[(c + k) % 8]} and {words[(r + k) % 8]} film. It was"
            q = Query(prompt=(text,), max_tokens=0, extra={"label_words": [" good", " bad"]})
            t0 = time.perf_counter()
            try:
                conns[c].send(q)
            except BBoxError as exc:  # counted, not raised: the figure is how many
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    t_start = time.perf_counter()
    for r in range(rounds):
        barrier = threading.Barrier(clients)
        threads = [threading.Thread(target=worker, args=(c, r, barrier)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss.append(rss_mb())
    wall = time.perf_counter() - t_start
    for c in conns:
        c.close()
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 1) if lat else float("nan")

    return {"clients": clients, "requests": clients * rounds * per_round, "ok": len(lat), "errors": len(errors),
            "first_errors": errors[:3], "wall_s": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 2) if wall else None,
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": pct(100),
                           "mean": round(statistics.fmean(lat) * 1000, 1) if lat else None},
            "rss_mb_after_round": [round(x, 1) for x in rss]}


ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 4
BUDGET = 12


def tune_command(base_url: str, model_id: str, cache: Path, out: Path) -> list[str]:
    """A short BDPL run through the CLI (4 concurrent requests at most)."""
    return [sys.executable, "-m", "bbox_lfm.cli", "tune", "bdpl", "--task", "sample", "--seed", "13",
            "--budget", str(BUDGET), "--set", "prompt_length=2", "--set", "n_candidates=4", "--set", "sample_size=3",
            "--set", "eval_every=6", "--eval-limit", "8", "--base-url", base_url, "--provider", "bbox-lfm",
            "--model", model_id, "--cache", str(cache), "--max-concurrency", str(CONCURRENCY), "--out", str(out),
            "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def kill_and_resume(server: Any, tmp: Path, *, kills: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run to the end, SIGKILLing the run ``kills`` times after a random number of answers.
    Returns the results and the proxy's counts."""
    rng = random.Random(seed)
    cache, out = tmp / "cache.sqlite", tmp / "results.json"
    with FaultProxy(server.base_url, every=0) as proxy:
        cmd = tune_command(proxy.base_url, server.model_id, cache, out)
        survived = 0
        for _ in range(kills):
            start = proxy.summary()["forwarded"]
            proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            target = start + rng.randint(2, 10)
            deadline = time.time() + 300
            while proxy.summary()["forwarded"] < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                survived += 1
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        counts = {**proxy.summary(), "kills": survived}
    return json.loads(out.read_text()), counts


def differences(a: Any, b: Any, path: str = "", *, rel: float = 1e-5) -> list[str]:
    """Paths at which two JSON values differ: exactly for everything but floats, which may differ
    by ``rel`` (the server batches concurrent requests together, and a batch's padding moves the
    last digits of a log-probability; predictions and prompts must be identical)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}.{k}", rel=rel)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]", rel=rel)]
    if isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= rel * max(abs(a), abs(b), 1e-3) else [path]
    return [] if a == b else [path]
