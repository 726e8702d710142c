"""Few-shot splits: deterministic per seed, disjoint, k per class; shipped splits when present."""

from __future__ import annotations

import pytest

from bbox_lfm.errors import ConfigError
from bbox_lfm.tasks import Example, load_task
from bbox_lfm.tasks.task import sample_few_shot

from .test_spec import needs_data

TRAIN = [Example(f"t{i}", i % 3) for i in range(60)]


def test_sampling_is_deterministic_per_seed_and_disjoint() -> None:
    a = sample_few_shot(TRAIN, n_labels=3, k=5, seed=7)
    b = sample_few_shot(TRAIN, n_labels=3, k=5, seed=7)
    c = sample_few_shot(TRAIN, n_labels=3, k=5, seed=8)
    assert a == b
    assert a != c
    assert not {e.text for e in a.train} & {e.text for e in a.dev}
    for split in (a.train, a.dev):
        assert sorted(e.label for e in split) == [0] * 5 + [1] * 5 + [2] * 5


def test_k_too_large_is_an_error() -> None:
    with pytest.raises(ConfigError, match="few_shot k must be at most half"):
        sample_few_shot(TRAIN, n_labels=3, k=11, seed=0)


def test_sample_task_uses_its_shot() -> None:
    task = load_task("sample")
    assert task.few_shot(seed=3) == task.few_shot(seed=3)
    fs = task.few_shot(seed=3, k=4)
    assert len(fs.train) == len(fs.dev) == 8


@needs_data
def test_shipped_kshot_split_is_used() -> None:
    task = load_task("sst2")
    fs = task.few_shot(seed=13)
    assert fs.train[0].text == "nothing happens , and it happens to flat characters ."
    assert len(fs.train) == len(fs.dev) == 32
    sampled = task.few_shot(seed=13, k=4)  # no shipped 4-shot split: sampled from train
    assert len(sampled.train) == 8 and sampled.train[0] not in fs.train[:1]


@needs_data
def test_snli_without_train_has_only_shipped_splits() -> None:
    task = load_task("snli")
    assert len(task.few_shot(seed=42).train) == 48
    with pytest.raises(ConfigError, match="must have a shipped 16-shot split or a train split"):
        task.few_shot(seed=5)
