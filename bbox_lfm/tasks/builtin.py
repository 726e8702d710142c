"""The built-in tasks, as specs over ``$BBOX_LFM_DATA/<task>`` (default ``../shared/data``).

Eval splits follow the data's PROVENANCE.md: the GLUE validation set for SST-2, RTE and MRPC,
the test set for MR, AG News and SNLI. Templates are written for a small causal LM
(SmolLM2-135M-Instruct through the completions endpoint, no chat wrapper): the answer comes
last, and every label word is one leading-space token in SmolLM2's tokenizer (checked in
``tests/tasks``). The first template of each task is its default; the others are the manual
alternatives that the zero-shot and best-of-N baselines use. MRPC reports F1 (as BBT does).

``best_template`` is the template that scored best on the full eval split in
``benchmarks/results/baselines.json`` (zero-shot, SmolLM2-135M-Instruct): SST-2 78.6 and MR 76.5
with ``Review: {text}\nSentiment:`` (template 0: 51.6 and 51.2), AG News 68.9 with ``Article:
{text}\nThis article is about`` (62.6), RTE 56.0 with its first template (52.7). Prompt methods
start there unless told otherwise (:mod:`bbox_lfm.tasks.start`); MRPC and SNLI were not
measured and start at their first template.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUILTIN"]

_DATA = {"train": "train.jsonl", "kshot": "k-shot"}

_SENTIMENT = [
    {"template": "{text} It was", "label_words": [" terrible", " great"]},
    {"template": "Review: {text}\nSentiment:", "label_words": [" negative", " positive"]},
    {"template": "{text} All in all, the movie was", "label_words": [" bad", " good"]},
    {"template": "Is this movie review positive or negative?\n{text}\nAnswer:", "label_words": [" negative",
                                                                                               " positive"]},
    {"template": "{text} In short, it is", "label_words": [" awful", " great"]},
]

_AGNEWS = [
    {"template": "{text}\nTopic:", "label_words": [" World", " Sports", " Business", " Technology"]},
    {"template": "Article: {text}\nThis article is about", "label_words": [" politics", " sports", " business",
                                                                           " science"]},
    {"template": "{text} This news is about", "label_words": [" world", " sports", " business", " tech"]},
    {"template": "Classify the news topic (World, Sports, Business or Science).\n{text}\nTopic:",
     "label_words": [" World", " Sports", " Business", " Science"]},
]

_ENTAIL2 = [
    {"template": "{text}\nQuestion: {text_pair} True or False?\nAnswer:", "label_words": [" True", " False"]},
    {"template": "Premise: {text}\nHypothesis: {text_pair}\nDoes the premise entail the hypothesis?",
     "label_words": [" Yes", " No"]},
    {"template": "{text}\nBased on that, is it true that \"{text_pair}\"? Answer:", "label_words": [" yes", " no"]},
]

_PARAPHRASE = [
    {"template": "Sentence 1: {text}\nSentence 2: {text_pair}\nDo both sentences mean the same thing?",
     "label_words": [" No", " Yes"]},
    {"template": "{text}\n{text_pair}\nAre these two sentences paraphrases? Answer:", "label_words": [" no",
                                                                                                    " yes"]},
    {"template": "\"{text}\" and \"{text_pair}\" say the same thing. True or False? Answer:",
     "label_words": [" False", " True"]},
]

_ENTAIL3 = [
    {"template": "{text}\nQuestion: {text_pair} Yes, no, or maybe?\nAnswer:", "label_words": [" Yes", " Maybe",
                                                                                              " No"]},
    {"template": "Premise: {text}\nHypothesis: {text_pair}\nDoes the premise entail the hypothesis? Yes, maybe, "
                 "or no?", "label_words": [" Yes", " Maybe", " No"]},
    {"template": "{text}\nIs it true that \"{text_pair}\"? Answer yes, maybe or no:",
     "label_words": [" yes", " maybe", " no"]},
]


def _spec(name: str, labels: list[str], templates: list[dict[str, Any]], eval_split: str, *,
          data: dict[str, str], pair: bool = False, metric: str = "accuracy", best: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "labels": labels, "template": templates[0]["template"],
                            "label_words": templates[0]["label_words"], "templates": templates,
                            "eval_split": eval_split, "metric": metric, "data": data, "best_template": best}
    if pair:
        spec["text_pair_field"] = "text_pair"
    return spec


BUILTIN: dict[str, dict[str, Any]] = {
    "sst2": _spec("sst2", ["negative", "positive"], _SENTIMENT, "dev",
                  data={**_DATA, "dev": "dev.jsonl", "test": "test.jsonl"}, best=1),
    "mr": _spec("mr", ["negative", "positive"], _SENTIMENT, "test", data={**_DATA, "test": "test.jsonl"}, best=1),
    "agnews": _spec("agnews", ["World", "Sports", "Business", "Sci/Tech"], _AGNEWS, "test",
                    data={**_DATA, "test": "test.jsonl"}, best=1),
    "rte": _spec("rte", ["entailment", "not_entailment"], _ENTAIL2, "dev", data={**_DATA, "dev": "dev.jsonl"},
                 pair=True, best=0),
    "mrpc": _spec("mrpc", ["not_equivalent", "equivalent"], _PARAPHRASE, "dev",
                  data={**_DATA, "dev": "dev.jsonl", "test": "test.jsonl"}, pair=True, metric="f1"),
    "snli": _spec("snli", ["entailment", "neutral", "contradiction"], _ENTAIL3, "test",
                  data={"kshot": "k-shot", "dev": "dev.jsonl", "test": "test.jsonl"}, pair=True),
}
