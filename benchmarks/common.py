"""Helpers the method benchmarks share: the machine record every results file carries, and the
mean ± std over seeds of its summaries."""

from __future__ import annotations

import os
import platform
import statistics

__all__ = ["cpu_flags", "machine", "mean_std"]


def machine() -> str:
    """Where the local server ran (its device decides the speed, not the figures' meaning) and
    with which torch and transformers (a transformers release once changed the figures)."""
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}")


def cpu_flags() -> list[str]:
    """The CPU's vector-instruction flags that decide matrix speed (avx2, avx512f, avx512_bf16,
    avx512_vnni, amx_*), from /proc/cpuinfo; empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted({f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"} or f.startswith("amx")})


def mean_std(xs: list[float]) -> dict[str, float | None]:
    """``{"mean", "std"}`` of ``xs`` (sample std; None where there are too few values)."""
    return {"mean": statistics.fmean(xs) if xs else None, "std": statistics.stdev(xs) if len(xs) > 1 else None}
