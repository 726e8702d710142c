"""Speed of the local provider (bbox_lfm.serve) against a direct in-process forward pass.

Load: ``--requests`` (20) concurrent requests of ``--prompts`` (32) SST-2 dev sentences each, in
the template ``Review: {text} Sentiment:``, scored with label words `` positive``/`` negative``
(``max_tokens=0``), sent through the official ``openai`` client. Compared side by side, in
interleaved rounds (the machine may be shared; each figure is the best round):

- ``server_over_direct``: sequences/s through the server (batching on) over sequences/s of the
  same batches run directly (tokenize, left-pad, ``logits_to_keep=1``, log-softmax, gather).
- ``batching_speedup``: the server with dynamic batching on over the same server with
  ``--batch-window-ms 0`` (each request's prompts run on their own); also for single-prompt
  requests (``batching_speedup_single_prompt``), where merging matters most.
- ``logits_to_keep_speedup``: direct scoring computing the last position's logits only over
  computing the full sequence's logits.
- ``bf16_over_fp32``: direct scoring speed in bfloat16 over float32, with the largest absolute
  difference of the label-word log-probabilities (``bf16_max_abs_logprob_diff``).

    python benchmarks/server.py [--requests 20 --prompts 32 --rounds 2]

Prints one JSON object and writes ``benchmarks/results/server.json``. Data are read from
``$BBOX_LFM_DATA`` (default ``../shared/data``); nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))  # benchmarks/common.py
from common import cpu_flags

WORDS = [" positive", " negative"]
TEMPLATE = "Review: {text} Sentiment:"


def sentences(count: int) -> list[str]:
    """The first ``count`` SST-2 dev sentences, in the scoring template."""
    root = Path(os.environ.get("BBOX_LFM_DATA", HERE.parent.parent / "shared" / "data"))
    with open(root / "sst2" / "dev.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    if len(texts) < count:
        raise SystemExit(f"need {count} sentences, {root}/sst2/dev.jsonl has {len(texts)}")
    return [TEMPLATE.format(text=t) for t in texts[:count]]


class ServerProcess:
    """``python -m bbox_lfm.serve`` in a subprocess on a free port, as a user would run it."""

    def __init__(self, *flags: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bbox_lfm.serve", "--port", str(self.port), "--log-level", "warning", *flags],
            cwd=HERE.parent,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server {flags} did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Terminate the server process."""
        self.proc.terminate()
        self.proc.wait(timeout=30)


def through_server(base_url: str, batches: list[list[str]]) -> tuple[float, list[list[float]]]:
    """Seconds to score all ``batches`` as concurrent requests, and the label log-probs."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=600)

    def one(batch: list[str]) -> list[list[float]]:
        response = client.completions.create(
            model="SmolLM2-135M-Instruct", prompt=batch, max_tokens=0, extra_body={"label_words": WORDS}
        )
        return [c.model_extra["label_logprobs"] for c in response.choices]

    start = time.perf_counter()
    with ThreadPoolExecutor(len(batches)) as pool:
        results = list(pool.map(one, batches))
    return time.perf_counter() - start, [row for rows in results for row in rows]


class Direct:
    """The same scoring done in-process, one forward pass per batch."""

    def __init__(self, dtype: str) -> None:
        import torch

        from bbox_lfm.serve.loading import load_model

        loaded = load_model(dtype=dtype)  # type: ignore[arg-type]
        self.torch = torch
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.tokenizer.padding_side = "left"
        self.word_ids = [self.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in WORDS]

    def score(self, batches: list[list[str]], *, keep: int = 1) -> tuple[float, list[list[float]]]:
        """Seconds for all batches and their label log-probs; ``keep=0`` computes all logits."""
        torch = self.torch
        rows: list[list[float]] = []
        start = time.perf_counter()
        for batch in batches:
            enc = self.tokenizer(batch, return_tensors="pt", padding=True)
            with torch.inference_mode():
                logits = self.model(**enc, logits_to_keep=keep).logits[:, -1]
                logp = torch.log_softmax(logits.float(), dim=-1)[:, self.word_ids]
            rows += logp.tolist()
        return time.perf_counter() - start, rows


def best(times: list[float]) -> float:
    """The fastest round: on a shared machine, the one least disturbed by other work."""
    return min(times)


def main() -> None:
    """Run every comparison and print/write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--single-requests", type=int, default=64, help="single-prompt requests")
    parser.add_argument("--side-batches", type=int, default=4, help="batches for logits/dtype figures")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "server.json")
    args = parser.parse_args()

    texts = sentences(args.requests * args.prompts)
    batches = [texts[i : i + args.prompts] for i in range(0, len(texts), args.prompts)]
    singles = [[t] for t in texts[: args.single_requests]]
    n_seq = len(texts)
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)
    load_start = os.getloadavg()[0]

    direct = Direct("float32")
    on = ServerProcess("--batch-window-ms", "5")
    off = ServerProcess("--batch-window-ms", "0")
    # Warm-up: first forward passes and the servers' first requests are slower.
    direct.score(batches[:1])
    through_server(on.base_url, batches[:2])
    through_server(off.base_url, batches[:2])

    t: dict[str, list[float]] = {k: [] for k in ("direct", "on", "off", "on1", "off1")}
    answers: dict[str, list[list[float]]] = {}
    try:
        for r in range(args.rounds):
            seconds, answers["direct"] = direct.score(batches)
            t["direct"].append(seconds)
            seconds, answers["on"] = through_server(on.base_url, batches)
            t["on"].append(seconds)
            seconds, _ = through_server(off.base_url, batches)
            t["off"].append(seconds)
            t["on1"].append(through_server(on.base_url, singles)[0])
            t["off1"].append(through_server(off.base_url, singles)[0])
            log(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in t.items()))
    finally:
        on.stop()
        off.stop()

    side = batches[: args.side_batches]
    keep1, keep_all = [], []
    for _ in range(args.rounds):
        keep1.append(direct.score(side, keep=1)[0])
        keep_all.append(direct.score(side, keep=0)[0])
    fp32_seconds, fp32_rows = direct.score(side)
    del direct
    bf16 = Direct("bfloat16")
    bf16.score(side[:1])
    bf16_seconds, bf16_rows = bf16.score(side)
    log(f"logits_to_keep 1: {keep1}, all: {keep_all}; fp32 {fp32_seconds:.1f}s bf16 {bf16_seconds:.1f}s")

    diff = max(abs(a - b) for ra, rb in zip(answers["direct"], answers["on"]) for a, b in zip(ra, rb))
    bf16_diff = max(abs(a - b) for ra, rb in zip(fp32_rows, bf16_rows) for a, b in zip(ra, rb))
    import torch

    result: dict[str, Any] = {
        "server_over_direct": round(best(t["direct"]) / best(t["on"]), 3),
        "batching_speedup": round(best(t["off"]) / best(t["on"]), 3),
        "batching_speedup_single_prompt": round(best(t["off1"]) / best(t["on1"]), 3),
        "logits_to_keep_speedup": round(best(keep_all) / best(keep1), 3),
        "bf16_over_fp32": round(fp32_seconds / bf16_seconds, 3),
        "bf16_max_abs_logprob_diff": round(bf16_diff, 4),
        "server_vs_direct_max_abs_logprob_diff": diff,
        "sequences_per_s": {
            "direct": round(n_seq / best(t["direct"]), 2),
            "server_batching_on": round(n_seq / best(t["on"]), 2),
            "server_batching_off": round(n_seq / best(t["off"]), 2),
            "server_single_prompt_on": round(len(singles) / best(t["on1"]), 2),
            "server_single_prompt_off": round(len(singles) / best(t["off1"]), 2),
        },
        "seconds": {k: [round(x, 3) for x in v] for k, v in t.items()}
        | {"keep_last": keep1, "keep_all": keep_all, "fp32_side": fp32_seconds, "bf16_side": bf16_seconds},
        "setup": {
            "requests": args.requests,
            "prompts_per_request": args.prompts,
            "single_prompt_requests": len(singles),
            "side_batches": len(side),
            "rounds": args.rounds,
            "label_words": WORDS,
            "server_flags": "--batch-window-ms 5 (on) / 0 (off), --max-batch 64, float32, separate process",
            "device": "cpu",
            "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "cpu_flags": cpu_flags(),
            "load_average_at_start": round(load_start, 2),
            "torch": torch.__version__,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kind": "speed", **result}, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
