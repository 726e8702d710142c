"""Tasks from specs: built-in names or a small TOML/JSON file, so a new task needs no code.

A spec (TOML shown; JSON has the same keys)::

    name = "tickets"
    labels = ["bug", "feature"]             # label names; data labels are names or indices
    label_words = [" bug", " feature"]      # scored right after the template, leading space
    template = "Ticket: {text}\\nType:"      # {text} required; {text_pair}, {prompt} optional
    metric = "accuracy"                     # or "f1" (macro-F1)
    eval_split = "test"                     # the split to report: train, dev or test
    shot = 16                               # default k of few_shot()
    single_token = true                     # label words must be one token each
    text_field = "text"                     # column names in the data files
    text_pair_field = "text_pair"           # only for sentence-pair tasks
    label_field = "label"
    soft_prompt_placeholder = "<soft>"      # optional; must appear in the template
    best_template = 1                       # optional: index into the templates (the default one
                                            # first) where prompt methods start: the best measured

    [data]                                  # paths relative to the spec file
    train = "train.jsonl"                   # .jsonl, .json, .csv or .tsv
    test = "test.csv"
    kshot = "k-shot"                        # optional: <k>-<seed>/{train,dev}.jsonl inside

    [hf]                                    # instead of [data]: Hugging Face datasets
    path = "glue"
    name = "sst2"
    splits = { train = "train", test = "validation" }

    [[templates]]                           # more manual templates (zero-shot, best-of-N)
    template = "{text} This is a"
    label_words = [" bug", " feature"]

Errors are :class:`~bbox_lfm.errors.ConfigError` in the project's one message shape: a missing
file, an unknown label in the data, a template without ``{text}``, an unknown key.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import ConfigError, check
from ..types import Query
from .builtin import BUILTIN
from .data import data_root, load_hf, read_examples
from .task import SPLITS, FewShot, Task

__all__ = ["count_tokens", "load_task", "task_from_spec"]

_KEYS = {"name", "labels", "label_words", "template", "metric", "eval_split", "shot", "single_token",
         "text_field", "text_pair_field", "label_field", "soft_prompt_placeholder", "data", "hf", "templates",
         "description", "best_template"}
SAMPLE_SPEC = Path(__file__).resolve().parent / "sample" / "task.toml"


def load_task(name_or_path: str | os.PathLike[str]) -> Task:
    """A built-in task by name (``sst2``, ``mr``, ``agnews``, ``rte``, ``mrpc``, ``snli``,
    ``sample``), or a task spec from a ``.toml`` / ``.json`` file."""
    key = str(name_or_path)
    if key == "sample":
        return _load_file(SAMPLE_SPEC, source="sample")
    if key in BUILTIN:
        root = data_root() / key
        if not root.is_dir():
            raise ConfigError(f"data of task {key!r} must be in $BBOX_LFM_DATA/{key} or ../shared/data/{key}; "
                              f"got no directory {str(root)!r}")
        return task_from_spec(BUILTIN[key], base_dir=root, source=key, check_files=False)
    path = Path(key)
    if path.suffix.lower() in (".toml", ".json"):
        return _load_file(path, source=str(path))
    raise ConfigError(f"task must be one of {sorted([*BUILTIN, 'sample'])} or a path to a .toml/.json spec; "
                      f"got {key!r}")


def _load_file(path: Path, *, source: str) -> Task:
    if not path.is_file():
        raise ConfigError(f"task spec must be an existing file; got {str(path)!r} (not found)")
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8")) if path.suffix.lower() == ".toml" \
            else json.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"task spec {str(path)!r} must be valid {path.suffix[1:].upper()}; got {exc}") from exc
    task = task_from_spec(spec, base_dir=path.parent, source=source, check_files=True)
    for split in task.splits:
        task.split(split)  # a user's spec is checked up front: bad labels fail here, not mid-run
    return task


def task_from_spec(spec: Mapping[str, Any], *, base_dir: str | os.PathLike[str] = ".", source: str = "",
                   check_files: bool = True) -> Task:
    """Build a :class:`Task` from a spec mapping (file paths relative to ``base_dir``)."""
    check(isinstance(spec, Mapping), "task spec", "a table/object", type(spec).__name__)
    unknown = sorted(set(spec) - _KEYS)
    check(not unknown, "task spec keys", f"among {sorted(_KEYS)}", unknown)
    for req in ("name", "labels", "label_words", "template"):
        check(req in spec, f"task spec field {req!r}", "present", None)
    base = Path(base_dir)
    labels = tuple(str(x) for x in spec["labels"])
    pair_field = spec.get("text_pair_field")
    fields: dict[str, Any] = {"text_field": str(spec.get("text_field", "text")),
                              "label_field": str(spec.get("label_field", "label")),
                              "text_pair_field": None if pair_field is None else str(pair_field)}
    loaders: dict[str, Any] = {}
    kshot_loader = None
    if "data" in spec and "hf" in spec:
        raise ConfigError("task spec must have [data] or [hf], not both; got both")
    if "data" in spec:
        data = dict(spec["data"])
        bad = sorted(set(data) - {*SPLITS, "kshot"})
        check(not bad, "[data] keys", f"among {[*SPLITS, 'kshot']}", bad)
        for split in SPLITS:
            if split in data:
                p = base / str(data[split])
                if check_files and not p.is_file():
                    raise ConfigError(f"data.{split} must be an existing file; got {str(p)!r} (not found)")
                if p.is_file():
                    loaders[split] = partial(read_examples, p, labels, **fields)
        if "kshot" in data:
            kdir = base / str(data["kshot"])
            if check_files and not kdir.is_dir():
                raise ConfigError(f"data.kshot must be an existing directory; got {str(kdir)!r} (not found)")
            kshot_loader = partial(_read_kshot, kdir, labels, fields)
    elif "hf" in spec:
        hf = dict(spec["hf"])
        check("path" in hf, "[hf].path", "a dataset name", None)
        for split, hf_split in dict(hf.get("splits", {})).items():
            check(split in SPLITS, "[hf].splits keys", f"among {list(SPLITS)}", split)
            loaders[split] = partial(load_hf, str(hf["path"]), str(hf_split), labels, name=hf.get("name"), **fields)
    else:
        raise ConfigError("task spec must have a [data] table (file paths) or an [hf] table; got neither")
    eval_split = str(spec.get("eval_split", "test"))
    if loaders:
        check(eval_split in loaders, "eval_split", f"a split with data ({sorted(loaders)})", eval_split)
    templates = tuple((str(t["template"]), tuple(t["label_words"])) for t in spec.get("templates", ()))
    template, words = str(spec["template"]), tuple(str(w) for w in spec["label_words"])
    if (template, words) not in templates:
        templates = ((template, words), *templates)
    return Task(name=str(spec["name"]), labels=labels, label_words=words, template=template,
                metric=str(spec.get("metric", "accuracy")), eval_split=eval_split, templates=templates,
                pair=fields["text_pair_field"] is not None, shot=int(spec.get("shot", 16)),
                single_token=bool(spec.get("single_token", True)),
                soft_prompt_placeholder=spec.get("soft_prompt_placeholder"),
                best_template=None if spec.get("best_template") is None else int(spec["best_template"]),
                source=source,
                loaders=loaders, kshot_loader=kshot_loader)


def _read_kshot(kdir: Path, labels: Sequence[str], fields: Mapping[str, Any], k: int, seed: int) -> FewShot | None:
    d = kdir / f"{k}-{seed}"
    if not d.is_dir():
        return None
    train, dev = (read_examples(d / f"{s}.jsonl", labels, **fields) for s in ("train", "dev"))
    return FewShot(train=train, dev=dev)


def count_tokens(client: Any, words: Sequence[str]) -> list[int] | None:
    """How many tokens each word takes after a context, as ``client``'s model tokenizes it, or
    None when the provider cannot tell.

    It asks the provider itself (no local tokenizer): completions requests with ``echo`` for the
    context ``"A"`` and ``"A" + word`` for every word; a word's count is the difference in echoed
    prompt tokens, so a BOS token or a chat wrapper cancels out. ``max_tokens`` is the profile's
    ``echo_max_tokens``: 0 where the server then scores the prompt only (bbox-lfm, vLLM), 1
    where 0 means "no limit" (llama.cpp); the generated token is then set aside where the
    server lists it (:func:`bbox_lfm.scoring.echoed_prompt_tokens`). Providers without ``echo`` (hosted chat
    APIs) cannot be asked, and None means "unchecked".
    """
    from ..scoring import echoed_prompt_tokens

    caps = client.capabilities
    if not caps.echo or not caps.completions:
        return None
    ctx = "A"
    prompts = (ctx, *(ctx + w for w in words))
    gen = max(0, caps.echo_max_tokens)
    batch = max(1, caps.max_batch) if gen == 0 else 1  # generated tokens are only told apart per request
    queries = [Query(prompt=prompts[i:i + batch], max_tokens=gen, echo=True, logprobs=1)
               for i in range(0, len(prompts), batch)]
    responses = client.send_many(queries)
    lengths: list[int] = []
    for r in responses:
        for c in r.choices:
            if c.logprobs is None or not c.logprobs.tokens:
                return None
            lengths.append(echoed_prompt_tokens(c, prompts[len(lengths)], r.usage.completion_tokens if gen else 0))
    if len(lengths) != len(prompts):
        return None
    return [n - lengths[0] for n in lengths[1:]]
