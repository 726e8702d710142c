"""Black-box knowledge distillation: a small local student learned from a teacher one can only query.

The teacher (:mod:`bbox_lfm.methods.teacher`) is any model the client reaches, asked through the
task's template and label words (optionally behind a prompt another method learned); its answer
for an input x is a distribution t(x) over the K labels: soft label-word log-probabilities where
the provider gives them, else the label word it writes first, one-hot.

The student (:mod:`bbox_lfm.students`) minimises Hinton et al.'s (2015) loss

    L = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(y, softmax(s))

over the transfer set, the CE term only where gold labels exist (``gold_k`` per class from the
task's few-shot split; none by default).

Transfer set, chosen by ``transfer``:

* ``unlabeled`` -- texts without labels (a user's file, else the task's train split with the
  labels hidden), ``pool_size`` of them drawn at random;
* ``synthetic`` -- data-free: the teacher writes inputs per class from an instruction
  (chat, temperature > 0, one ``sample_id`` per sample so repeats are distinct cache entries),
  duplicates are dropped by normalised text before anything is stored or scored, and a text is
  kept only when the teacher itself gives the class it was written for probability
  >= ``synth_min_confidence``; a kept text costs two teacher sequences (write + label);
* ``both`` -- ``synthetic_fraction`` of the budget on synthesis, the rest on unlabeled texts.

Query economy: ``budget`` counts teacher SEQUENCES (every text written or labelled, cache hits
included, so a rerun trains the same student; the client's own budget counts only what went
upstream). ``selection="random"`` labels a random sample of the pool; ``"active"`` spends the
budget in ``rounds``, each retraining the student and asking about the texts it is least sure
of and that are unlike what is labelled (:mod:`bbox_lfm.methods.selection`, over MiniLM
embeddings).
"""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..budget import Budget
from ..errors import BudgetExhausted, ConfigError, check
from ..types import Query
from .base import Method, register
from .selection import (
    DIVERSITIES,
    SELECTIONS,
    UNCERTAINTIES,
    ActiveSelection,
    k_center_greedy,
    k_means_medoids,
    normalize_text,
    round_sizes,
    uncertainty,
)
from .teacher import ONE_LABEL_SHARE, SIGNALS, OneLabelTeacherWarning, Teacher, as_input, label_shares

__all__ = ["Distill", "DistillConfig", "OneLabelTeacherWarning", "Teacher", "k_center_greedy", "k_means_medoids",
           "normalize_text", "uncertainty"]

TRANSFERS = ("unlabeled", "synthetic", "both")

#: what the teacher is asked to write, per built-in task (others: a generic description)
_KINDS = {"sst2": "a one-sentence movie review", "mr": "a one-sentence movie review",
          "agnews": "a one-sentence news headline"}
DEFAULT_INSTRUCTION = 'Write {kind} that is clearly {label}. Reply with the text only.'
_SEED_STRIDE = 1_000_000  # sample ids of different seeds never collide


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Distill's hyperparameters, checked once when built.

    student: ``minilm-head`` (frozen encoder + head) or ``minilm-ft`` (fine-tuned encoder).
    transfer: ``unlabeled``, ``synthetic`` or ``both``.
    budget: teacher sequences (texts labelled plus texts written).
    selection: ``random`` or ``active``; rounds, candidates, uncertainty, diversity, explore:
      active selection's number of rounds, the uncertain shortlist as a multiple of the round's
      size, the uncertainty measure (``entropy`` or ``margin``), how the shortlist is thinned
      (``kcenter``, ``kmeans``, ``none``) and the share of each round picked at random.
    pool_size: unlabeled texts considered (a seeded sample of the pool).
    synthetic_fraction: share of the budget spent on synthesis when ``transfer="both"``.
    synth_instruction: per-class instruction with ``{label}`` and ``{kind}`` slots.
    synth_min_confidence: keep a written text if the teacher gives its class at least this.
    synth_max_tokens, synth_temperature: sampling of synthetic texts.
    teacher_signal: ``auto`` (soft where logprobs exist), ``soft`` or ``hard``;
      teacher_endpoint: ``completions`` or ``chat``.
    prompt: a discrete prompt for the teacher (from another method's results); teacher_extra:
      request-body extensions sent with every teacher query (e.g. a learned ``soft_prompt``).
    temperature, alpha: Hinton's T and the weight of the soft term.
    gold_k: gold labels per class from the task's few-shot split added with CE (0 = none).
    student_kw: further student hyperparameters (e.g. ``{"hidden": 0}``, ``{"epochs": 2}``).
    seed: every random choice (pool sample, selection, sample ids, student init).
    """

    student: str = "minilm-head"
    transfer: str = "unlabeled"
    budget: int = 1000
    selection: str = "random"
    rounds: int = 5
    candidates: int = 4
    uncertainty: str = "entropy"
    diversity: str = "kcenter"
    explore: float = 0.0
    pool_size: int = 4000
    synthetic_fraction: float = 0.5
    synth_instruction: str = DEFAULT_INSTRUCTION
    synth_min_confidence: float = 0.5
    synth_max_tokens: int = 48
    synth_temperature: float = 1.0
    teacher_signal: str = "auto"
    teacher_endpoint: str = "completions"
    prompt: str = ""
    teacher_extra: Mapping[str, Any] = field(default_factory=dict)
    temperature: float = 2.0
    alpha: float = 0.5
    gold_k: int = 0
    student_kw: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        from ..students import STUDENTS

        check(self.student in STUDENTS, "student", f"one of {sorted(STUDENTS)}", self.student)
        check(self.transfer in TRANSFERS, "transfer", f"one of {TRANSFERS}", self.transfer)
        check(isinstance(self.budget, int) and self.budget >= 1, "budget", "an integer >= 1 (teacher sequences)",
              self.budget)
        check(self.selection in SELECTIONS, "selection", f"one of {SELECTIONS}", self.selection)
        check(self.rounds >= 1, "rounds", ">= 1", self.rounds)
        check(self.candidates >= 1, "candidates", ">= 1", self.candidates)
        check(self.uncertainty in UNCERTAINTIES, "uncertainty", f"one of {UNCERTAINTIES}", self.uncertainty)
        check(self.diversity in DIVERSITIES, "diversity", f"one of {DIVERSITIES}", self.diversity)
        check(0.0 <= self.explore <= 1.0, "explore", "in [0, 1] (the share of each round picked at random)",
              self.explore)
        check(self.pool_size >= 1, "pool_size", ">= 1", self.pool_size)
        check(0.0 < self.synthetic_fraction < 1.0, "synthetic_fraction", "in (0, 1)", self.synthetic_fraction)
        check("{label}" in self.synth_instruction, "synth_instruction", "a string with a {label} slot",
              self.synth_instruction)
        check(0.0 <= self.synth_min_confidence <= 1.0, "synth_min_confidence", "in [0, 1]", self.synth_min_confidence)
        check(self.synth_temperature > 0, "synth_temperature", "> 0 (synthesis samples)", self.synth_temperature)
        check(self.synth_max_tokens >= 1, "synth_max_tokens", ">= 1", self.synth_max_tokens)
        check(self.teacher_signal in SIGNALS, "teacher_signal", f"one of {SIGNALS}", self.teacher_signal)
        check(isinstance(self.prompt, str), "prompt", "a string (a discrete prompt)", self.prompt)
        check(self.gold_k >= 0, "gold_k", ">= 0", self.gold_k)
        # plain dicts (None accepted for "none"), so the config is JSON as it stands
        object.__setattr__(self, "teacher_extra", dict(self.teacher_extra or {}))
        object.__setattr__(self, "student_kw", dict(self.student_kw or {}))


@register
class Distill(Method):
    """Distil a queried teacher into a local MiniLM student (see the module docstring).

    Takes `DistillConfig`'s fields as keyword arguments; they are documented there and read as
    ``self.config.<name>``.
    """

    name = "distill"
    kind = "student"
    needs = ()  # soft labels need logprobs; without them the teacher's generated text is parsed
    tiny_config: ClassVar[dict[str, Any]] = {"budget": 12, "pool_size": 24, "rounds": 2, "student_kw": {"epochs": 20}}
    contract_exempt: ClassVar[dict[str, str]] = {
        "capability": "needs no capability: without logprobs the teacher's generated text is parsed (hard labels)",
    }

    def __init__(self, **config: Any) -> None:
        self.config = DistillConfig(**config)
        self.seed = self.config.seed
        self.student_: Any = None

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        return dataclasses.asdict(self.config)

    def teacher(self, task: Any) -> Teacher:
        """The teacher this method queries for ``task``."""
        c = self.config
        return Teacher(task, prompt=c.prompt, extra=c.teacher_extra, signal=c.teacher_signal,
                       endpoint=c.teacher_endpoint)

    def new_student(self, n_classes: int) -> Any:
        """A fresh, untrained student."""
        from ..students import make_student

        c = self.config
        return make_student(c.student, n_classes=n_classes, temperature=c.temperature, alpha=c.alpha,
                            seed=c.seed, **c.student_kw)

    # -- fit ------------------------------------------------------------------------------------

    def fit(self, client: Any, task: Any, *, unlabeled: Sequence[Any] | None = None,
            progress: bool = True) -> Distill:
        """Query the teacher through ``client`` for at most ``budget`` sequences and train the student.

        ``unlabeled``: the user's texts (strings, (text, text_pair) pairs or Examples); default
        the task's train split with its labels hidden. Stops cleanly on ``BudgetExhausted``.
        """
        t0 = time.perf_counter()
        K = len(task.labels)
        self.teacher_ = self.teacher(task)
        self.signal_ = self.teacher_.resolve(client)
        # B: every teacher sequence of the search counts here, upstream ones also in the client's budget
        search = client.with_budget(Budget(sequences=self.config.budget))
        self._spent = 0
        self._rng = np.random.default_rng(self.seed)
        self.inputs_: list[Any] = []
        self.teacher_logprobs_ = np.zeros((0, K))
        self.curve_: list[dict[str, Any]] = []
        self.stats_: dict[str, Any] = {"teacher_signal": self.signal_, "misses": 0, "unparsed": 0}
        self._gold_inputs, self._gold = self._gold_set(task)
        self._dev = self._dev_split(task)
        try:
            if self.config.transfer in ("synthetic", "both"):
                share = self.config.budget if self.config.transfer == "synthetic" else int(self.config.budget * self.config.synthetic_fraction)
                self._synthesize(search, task, share, progress=progress)
            if self.config.transfer in ("unlabeled", "both"):
                pool = self._pool(task, unlabeled)
                self._select_and_label(search, pool, self.config.budget - self._spent, progress=progress)
        except BudgetExhausted as exc:  # an enclosing budget ran out: keep what was answered
            self.stats_["stopped"] = str(exc)
        self._check_teacher_labels(task)
        self.student_ = self._train(K)
        self._record()
        self.budget_spent_ = search.budget.summary()
        self.eval_spent_ = Budget().summary()  # dev accuracy is the student's: no teacher query
        self.best_prompt_ = self.config.prompt
        self.n_queried_ = self._spent
        self.stats_.update(transfer_size=len(self.inputs_), fit_s=time.perf_counter() - t0)
        self.extra_ = self.stats_  # what `bbox-lfm tune` reports under extra.method
        return self

    def _check_teacher_labels(self, task: Any) -> None:
        """Record the share of each label among the teacher's answers on the transfer set, and warn
        when one label takes at least ``ONE_LABEL_SHARE`` of 20 or more answers: a student learns
        little from a teacher that (under this template) says the same thing to nearly everything."""
        n = len(self.inputs_)
        if n == 0:
            return
        share = label_shares(self.teacher_logprobs_, len(task.labels))
        self.stats_["teacher_label_share"] = {lab: round(float(v), 4) for lab, v in zip(task.labels, share)}
        top = int(share.argmax())
        if n >= 20 and share[top] >= ONE_LABEL_SHARE:
            warnings.warn(f"the teacher gave {task.labels[top]!r} to {share[top]:.0%} of the {n} transfer texts, so "
                          "the student can learn little beyond that label; another template or a learned prompt "
                          "may teach more (CLI: --template-index, --prompt-from)", OneLabelTeacherWarning,
                          stacklevel=3)

    def _dev_split(self, task: Any) -> list[Any]:
        """The gold few-shot dev split (for the curve only), or nothing when the task has none."""
        try:
            return list(task.few_shot(seed=self.seed).dev)
        except ConfigError:
            return []

    def _gold_set(self, task: Any) -> tuple[list[Any], np.ndarray]:
        if self.config.gold_k == 0:
            return [], np.zeros(0, dtype=np.int64)
        fs = task.few_shot(seed=self.seed, k=self.config.gold_k)
        return [as_input(ex) for ex in fs.train], np.array([ex.label for ex in fs.train], dtype=np.int64)

    def _pool(self, task: Any, unlabeled: Sequence[Any] | None) -> list[Any]:
        """Unlabeled inputs, deduplicated, minus what is already in the transfer set, ``pool_size`` at most."""
        raw = task.split("train") if unlabeled is None else list(unlabeled)
        seen = {normalize_text(x if isinstance(x, str) else " ".join(x)) for x in self.inputs_}
        pool = []
        for x in raw:
            x = as_input(x) if hasattr(x, "text") else (x if isinstance(x, str) else tuple(x))
            key = normalize_text(x if isinstance(x, str) else " ".join(x))
            if key and key not in seen:
                seen.add(key)
                pool.append(x)
        check(len(pool) > 0, "unlabeled", "at least one text not already in the transfer set", 0)
        if len(pool) > self.config.pool_size:
            idx = np.sort(self._rng.choice(len(pool), size=self.config.pool_size, replace=False))
            pool = [pool[i] for i in idx]
        return pool

    def _ask_teacher(self, client: Any, inputs: list[Any], *, progress: bool, desc: str) -> np.ndarray:
        """Label ``inputs`` (the caller made sure they fit the budget) and count them."""
        lp, misses = self.teacher_.label(client, inputs, progress=progress, desc=desc)
        self._spent += len(inputs)
        self.stats_["misses"] += misses
        return lp

    def _add(self, inputs: list[Any], lp: np.ndarray) -> None:
        ok = ~np.isnan(lp).any(axis=1)
        self.stats_["unparsed"] += int((~ok).sum())
        self.inputs_ += [x for x, good in zip(inputs, ok) if good]
        self.teacher_logprobs_ = np.concatenate([self.teacher_logprobs_, lp[ok]])

    # -- transfer set: data-free synthesis ---------------------------------------------------------

    def _synthesize(self, client: Any, task: Any, share: int, *, progress: bool) -> None:
        """The teacher writes texts per class; unique ones are labelled by it and kept when confident."""
        check(not getattr(task, "pair", False), "transfer", "'unlabeled' for a sentence-pair task", self.config.transfer)
        K = len(task.labels)
        kind = _KINDS.get(task.name, f"one example input for the text classification task {task.name!r}")
        instr = [self.config.synth_instruction.format(label=lab, kind=kind) for lab in task.labels]
        seen: set[str] = set()
        next_id = [0] * K
        stats = {"written": 0, "duplicates": 0, "empty": 0, "unconfident": 0, "kept": 0}
        start = self._spent
        while True:
            left = share - (self._spent - start)
            m = left // (2 * K)  # each kept text costs a write and a label
            if m == 0:
                break
            queries, owner = [], []
            for c in range(K):
                for _ in range(m):
                    # sample_id = seed * stride + i: sample i of class c, distinct across seeds
                    queries.append(Query(endpoint="chat", messages=({"role": "user", "content": instr[c]},),
                                         max_tokens=self.config.synth_max_tokens, temperature=self.config.synth_temperature,
                                         sample_id=self.seed * _SEED_STRIDE + next_id[c]))
                    owner.append(c)
                    next_id[c] += 1
            texts = [r.text for r in client.send_many(queries)]
            self._spent += len(queries)
            stats["written"] += len(texts)
            new, cls = [], []
            for text, c in zip(texts, owner):
                text = _clean(text)
                key = normalize_text(text)
                if not key:
                    stats["empty"] += 1
                elif key in seen:  # never store (or pay to label) a duplicate
                    stats["duplicates"] += 1
                else:
                    seen.add(key)
                    new.append(text)
                    cls.append(c)
            lp = self._ask_teacher(client, new, progress=progress, desc="teacher (synthetic)")
            # confidence filter: p_T=1(c | x) >= tau for the class c the text was written for
            p = _probs(lp)
            keep = [i for i, c in enumerate(cls) if not np.isnan(p[i]).any() and p[i, c] >= self.config.synth_min_confidence]
            stats["unconfident"] += len(new) - len(keep)
            stats["kept"] += len(keep)
            self._add([new[i] for i in keep], lp[keep] if keep else np.zeros((0, K)))
            if progress:
                print(f"synthesis: {stats}", flush=True)
        self.stats_["synthetic"] = stats
        self.synthetic_ = list(self.inputs_)

    # -- transfer set: unlabeled texts, random or active ------------------------------------------

    def _select_and_label(self, client: Any, pool: list[Any], share: int, *, progress: bool) -> None:
        share = min(share, len(pool))
        if share <= 0:
            return
        if self.config.selection == "random":
            order = self._rng.permutation(len(pool))[:share]
            sizes = round_sizes(share, self.config.rounds)
            at = 0
            for size in sizes:  # the same rounds as active selection, for comparable curves
                batch = [pool[i] for i in order[at:at + size]]
                at += size
                self._add(batch, self._ask_teacher(client, batch, progress=progress, desc="teacher"))
                if len(sizes) > 1 and self.config.student == "minilm-head":  # a curve point costs a fine-tune otherwise
                    self._record(self._train(len(self.teacher_.task.labels)))
            return
        self._active(client, pool, share, progress=progress)

    def _active(self, client: Any, pool: list[Any], share: int, *, progress: bool) -> None:
        """Rounds of active selection over frozen MiniLM embeddings; texts already in the transfer
        set (synthetic ones) count as labelled."""
        from ..students.minilm import shared_encoder

        c = self.config
        K = len(self.teacher_.task.labels)
        n_known = len(self.inputs_)
        emb = shared_encoder().embed(list(self.inputs_) + pool, progress=progress)
        active = ActiveSelection(emb, n_known, uncertainty=c.uncertainty, candidates=c.candidates,
                                 diversity=c.diversity, explore=c.explore, rng=self._rng)
        for r, m in enumerate(round_sizes(share, c.rounds)):
            proba = None
            if r > 0 or active.labelled:
                student = self._train(K)
                self._record(student)
                proba = student.predict_proba([pool[i - n_known] for i in active.unlabelled], progress=False)
            batch = [pool[i - n_known] for i in active.pick(m, proba)]
            self._add(batch, self._ask_teacher(client, batch, progress=progress, desc=f"teacher (round {r})"))

    # -- student ------------------------------------------------------------------------------------

    def _train(self, K: int) -> Any:
        """A student trained on the transfer set (soft/hard teacher targets) plus any gold labels."""
        inputs = list(self.inputs_) + self._gold_inputs
        check(len(inputs) > 0, "budget", "enough for at least one teacher answer or gold label", self.config.budget)
        t = np.concatenate([self.teacher_logprobs_, np.full((len(self._gold_inputs), K), np.nan)])
        y = np.concatenate([np.full(len(self.inputs_), -1, dtype=np.int64), self._gold])
        return self.new_student(K).fit(inputs, teacher_logprobs=t if len(self.inputs_) else None,
                                       gold=y if len(self._gold_inputs) else None)

    def _record(self, student: Any = None) -> None:
        """One curve point: teacher sequences so far and the student's accuracy on the gold dev split."""
        student = student or self.student_
        acc = None
        if self._dev:
            pred = student.predict([as_input(ex) for ex in self._dev], progress=False)
            acc = float(np.mean(pred == np.array([ex.label for ex in self._dev])))
        point = {"calls": self._spent, "sequences": self._spent, "transfer_size": len(self.inputs_),
                 "dev_accuracy": acc}
        if self.curve_ and self.curve_[-1]["sequences"] == self._spent:
            self.curve_[-1] = point
        else:
            self.curve_.append(point)

    # -- predict, state ----------------------------------------------------------------------------

    def predict(self, client: Any, examples: Sequence[Any], *, progress: bool = True) -> np.ndarray:
        """The student's label for each example (``client`` is not used: the student is local)."""
        check(self.student_ is not None, "distill", "fitted (or loaded) before predicting", "an unfitted method")
        return self.student_.predict([as_input(ex) if hasattr(ex, "text") else ex for ex in examples],
                                     progress=progress)

    def state(self) -> dict[str, Any]:
        """Learned state except the student's weights (those go beside the JSON, see :meth:`save`)."""
        return {"n_queried": getattr(self, "n_queried_", 0), "curve": getattr(self, "curve_", []),
                "stats": getattr(self, "stats_", {}), "budget_spent": getattr(self, "budget_spent_", {}),
                "student_dir": getattr(self, "_student_dir", None)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (the student itself is read by :meth:`load`)."""
        self.n_queried_ = state["n_queried"]
        self.curve_ = state["curve"]
        self.stats_ = state["stats"]
        self.budget_spent_ = state["budget_spent"]
        self._student_dir = state["student_dir"]

    def save(self, path: str | Path, *, student_dir: str | Path | None = None) -> Path:
        """Write the method JSON at ``path`` and the student into ``student_dir`` (default
        ``<path stem>.student/``), which must lie in ``path``'s directory."""
        check(self.student_ is not None, "distill", "fitted before saving", "an unfitted method")
        path = Path(path)
        student_dir = Path(student_dir) if student_dir is not None else path.with_name(path.stem + ".student")
        check(student_dir.parent.resolve() == path.parent.resolve(), "student_dir",
              f"a directory beside {str(path)!r}", str(student_dir))
        self.student_.save(student_dir)
        self._student_dir = student_dir.name
        return super().save(path)

    @classmethod
    def load(cls, path: str | Path) -> Distill:
        """Rebuild a fitted method (student included) from :meth:`save`'s files."""
        from ..students import load_student

        obj = super().load(path)
        assert isinstance(obj, Distill)
        obj.student_ = load_student(Path(path).parent / obj._student_dir)
        return obj


def _clean(text: str) -> str:
    """A generated text without the wrapping a chat model likes to add (quotes, a label line)."""
    text = text.strip()
    text = re.sub(r"^(sure|here|certainly)[^:\n]*:\s*", "", text, flags=re.IGNORECASE)
    text = text.split("\n")[0].strip() if text else text
    text = text.strip("\"'“”‘’ ").strip()
    return re.sub(r"\s+", " ", text)


def _probs(lp: np.ndarray) -> np.ndarray:
    """softmax over the label words of each row of log-probs (T = 1); NaN rows stay NaN."""
    out = np.full(lp.shape, np.nan)
    ok = ~np.isnan(lp).any(axis=1)
    if ok.any():
        z = lp[ok] - lp[ok].max(axis=1, keepdims=True)
        e = np.exp(z)
        out[ok] = e / e.sum(axis=1, keepdims=True)
    return out
