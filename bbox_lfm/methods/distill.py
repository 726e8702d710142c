"""Black-box knowledge distillation: a small local student learned from a teacher one can only query.

The teacher is any model the client reaches, asked through the task's template and label words
(optionally behind a prompt another method learned). Its answer for an input x is a
distribution over the K labels:

* soft labels, where the provider gives log-probabilities: t(x) = log p(w_k | template(x)) for the
  label words w_k (exact scores, or the top-k floor documented in :mod:`bbox_lfm.scoring`);
* hard labels, where it does not: the label word the teacher writes first (greedy, a few
  tokens), one-hot; an answer naming no label word is dropped.

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
budget in ``rounds``: round 0 picks a diverse seed set by k-center greedy over MiniLM
embeddings (Sener & Savarese, 2018); each later round retrains the student, keeps the
``candidates`` x m pool texts where the student is least sure (entropy or margin) and picks m
of them by k-center greedy, so the m queries are uncertain and unlike each other and unlike
what is already labelled. ``diversity="kmeans"`` picks the medoids of m k-means clusters of the
shortlist instead (typical texts rather than k-center's outliers), ``"none"`` the m most
uncertain; ``explore`` spends that share of every round on uniformly random texts.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..budget import Budget
from ..errors import BudgetExhausted, ConfigError, check
from ..types import Query
from .base import Method, register

__all__ = ["Distill", "OneLabelTeacherWarning", "Teacher", "k_center_greedy", "k_means_medoids", "normalize_text",
           "uncertainty"]

TRANSFERS = ("unlabeled", "synthetic", "both")
SELECTIONS = ("random", "active")
SIGNALS = ("auto", "soft", "hard")
UNCERTAINTIES = ("entropy", "margin")
DIVERSITIES = ("kcenter", "kmeans", "none")

#: what the teacher is asked to write, per built-in task (others: a generic description)
_KINDS = {"sst2": "a one-sentence movie review", "mr": "a one-sentence movie review",
          "agnews": "a one-sentence news headline"}
DEFAULT_INSTRUCTION = 'Write {kind} that is clearly {label}. Reply with the text only.'
_SEED_STRIDE = 1_000_000  # sample ids of different seeds never collide
#: a teacher giving one label to at least this share of the transfer set draws a warning
ONE_LABEL_SHARE = 0.95


class OneLabelTeacherWarning(UserWarning):
    """The teacher gave nearly every transfer text the same label."""


# -- the teacher ------------------------------------------------------------------------------

class Teacher:
    """The queried model as a labeller for a task: template + label words (+ a learned prompt).

    ``label(client, inputs)`` returns log-probabilities [n, K] (soft) or one-hot log-probs with
    -inf (hard), a NaN row where a hard answer named no label word. Every input goes as its own
    request, so each text is one cache entry whatever batch it was selected in: reruns and other
    selection strategies reuse earlier answers (the local server batches concurrent requests
    into shared forward passes anyway).
    """

    def __init__(self, task: Any, *, prompt: str = "", extra: Mapping[str, Any] | None = None,
                 signal: str = "auto", endpoint: str = "completions", hard_max_tokens: int = 3):
        check(signal in SIGNALS, "teacher_signal", f"one of {SIGNALS}", signal)
        check(endpoint in ("completions", "chat"), "teacher_endpoint", "'completions' or 'chat'", endpoint)
        self.task = task
        self.prompt = prompt
        self.extra = dict(extra or {})
        self.signal = signal
        self.endpoint = endpoint
        self.hard_max_tokens = hard_max_tokens

    def resolve(self, client: Any) -> str:
        """``soft`` where the provider gives label-word scores or logprobs, else ``hard``."""
        if self.signal != "auto":
            return self.signal
        caps = client.capabilities
        return "soft" if (caps.label_words or caps.logprobs) else "hard"

    def prompts(self, inputs: Sequence[Any]) -> list[str]:
        """The filled template for each input (text, or (text, text_pair))."""
        from ..tasks import Example

        return [self.task.format(Example(text=x, label=0) if isinstance(x, str)
                                 else Example(text=x[0], label=0, text_pair=x[1]), self.prompt) for x in inputs]

    def parse(self, text: str) -> int | None:
        """The label whose word the generated ``text`` names first (case-insensitive), or None."""
        low = text.strip().casefold()
        words = [w.strip().casefold() for w in self.task.label_words]
        for k, w in enumerate(words):
            if low.startswith(w):
                return k
        found = [(m.start(), k) for k, w in enumerate(words) for m in [re.search(rf"\b{re.escape(w)}\b", low)] if m]
        return min(found)[1] if found else None

    def _one(self, client: Any, prompt: str, signal: str) -> tuple[np.ndarray, int]:
        K = len(self.task.label_words)
        if signal == "soft":
            s = client.score([prompt], self.task.label_words, extra=self.extra, endpoint=self.endpoint,
                             max_concurrency=1)
            return s.logprobs[0], s.misses
        if self.endpoint == "chat":
            q = Query(endpoint="chat", messages=({"role": "user", "content": prompt},),
                      max_tokens=self.hard_max_tokens, extra=self.extra)
        else:
            q = Query(prompt=(prompt,), max_tokens=self.hard_max_tokens, extra=self.extra)
        k = self.parse(client.send(q).text)
        row = np.full(K, np.nan) if k is None else np.where(np.arange(K) == k, 0.0, -np.inf)
        return row, 0

    def label(self, client: Any, inputs: Sequence[Any], *, progress: bool = False,
              desc: str = "teacher") -> tuple[np.ndarray, int]:
        """``(logprobs [n, K], misses)``, one teacher sequence per input, concurrently."""
        from tqdm.auto import tqdm

        prompts = self.prompts(inputs)
        if not prompts:
            return np.zeros((0, len(self.task.label_words))), 0
        signal = self.resolve(client)
        with ThreadPoolExecutor(max_workers=min(client.max_concurrency, len(prompts))) as pool, \
                tqdm(total=len(prompts), desc=desc, unit="ex", disable=not progress, leave=False) as bar:
            futures = [pool.submit(self._one, client, p, signal) for p in prompts]
            for f in futures:
                f.add_done_callback(lambda _f: bar.update(1))
            errors = [f.exception() for f in futures]
        for exc in errors:
            if exc is not None:
                raise exc
        rows = [f.result() for f in futures]
        return np.stack([r for r, _ in rows]), sum(m for _, m in rows)


# -- selection helpers ------------------------------------------------------------------------

def normalize_text(text: str) -> str:
    """Lowercase words and digits only: what two texts must share to count as duplicates."""
    return " ".join(re.findall(r"[a-z0-9]+", text.casefold()))


def uncertainty(proba: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Student uncertainty per row: entropy H(q) = -sum_k q_k log q_k, or 1 - (q_(1) - q_(2))."""
    check(kind in UNCERTAINTIES, "uncertainty", f"one of {UNCERTAINTIES}", kind)
    if kind == "entropy":
        return -(proba * np.log(np.clip(proba, 1e-12, 1.0))).sum(axis=1)
    top2 = np.sort(proba, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def k_center_greedy(emb: np.ndarray, candidates: Sequence[int], centers: Sequence[int], m: int,
                    rng: np.random.Generator) -> list[int]:
    """Pick ``m`` of ``candidates`` by k-center greedy: repeatedly the one farthest from every
    center chosen so far, i = argmax_j min_c ||e_j - e_c|| (the first at random when there are no
    centers). Returns indices into ``emb``."""
    cand = np.asarray(candidates, dtype=np.int64)
    m = min(m, len(cand))
    if m <= 0:
        return []
    E = emb[cand]
    d = np.full(len(cand), np.inf)
    for start in range(0, len(centers), 2048):  # chunked: pool x labelled distances stay small
        C = emb[np.asarray(centers[start:start + 2048], dtype=np.int64)]
        d = np.minimum(d, np.sqrt(np.maximum(((E[:, None, :] - C[None]) ** 2).sum(-1), 0)).min(1))
    chosen: list[int] = []
    for _ in range(m):
        j = int(rng.integers(len(cand))) if np.isinf(d).all() else int(np.argmax(d))
        chosen.append(j)
        d = np.minimum(d, np.sqrt(((E - E[j]) ** 2).sum(1)))
        d[j] = -1.0
    return [int(cand[j]) for j in chosen]


def k_means_medoids(emb: np.ndarray, candidates: Sequence[int], m: int, seed: int) -> list[int]:
    """Pick ``m`` of ``candidates``: cluster them into m groups (k-means) and take the member
    nearest each centroid -- diverse like k-center, but typical texts rather than outliers."""
    from sklearn.cluster import KMeans

    cand = np.asarray(candidates, dtype=np.int64)
    m = min(m, len(cand))
    if m <= 0:
        return []
    if m == len(cand):
        return [int(c) for c in cand]
    E = emb[cand]
    km = KMeans(n_clusters=m, n_init=1, random_state=seed).fit(E)
    d = ((E - km.cluster_centers_[km.labels_]) ** 2).sum(1)
    chosen = []
    for c in range(m):
        members = np.flatnonzero(km.labels_ == c)
        if len(members):
            chosen.append(int(cand[members[np.argmin(d[members])]]))
    return chosen


def _as_input(ex: Any) -> Any:
    return ex.text if getattr(ex, "text_pair", None) is None else (ex.text, ex.text_pair)


# -- the method -------------------------------------------------------------------------------

@register
class Distill(Method):
    """Distil a queried teacher into a local MiniLM student (see the module docstring).

    Parameters (keyword-only):
      student: ``minilm-head`` (frozen encoder + head) or ``minilm-ft`` (fine-tuned encoder).
      transfer: ``unlabeled``, ``synthetic`` or ``both``.
      budget: teacher sequences (texts labelled plus texts written).
      selection: ``random`` or ``active``; rounds, candidates, uncertainty: active selection's
        number of rounds, the uncertain shortlist as a multiple of the round's size, and the
        uncertainty measure (``entropy`` or ``margin``).
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

    name = "distill"
    kind = "student"
    needs = ()  # soft labels need logprobs; without them the teacher's generated text is parsed

    def __init__(self, *, student: str = "minilm-head", transfer: str = "unlabeled", budget: int = 1000,
                 selection: str = "random", rounds: int = 5, candidates: int = 4, uncertainty: str = "entropy",
                 diversity: str = "kcenter", explore: float = 0.0,
                 pool_size: int = 4000, synthetic_fraction: float = 0.5, synth_instruction: str = DEFAULT_INSTRUCTION,
                 synth_min_confidence: float = 0.5, synth_max_tokens: int = 48, synth_temperature: float = 1.0,
                 teacher_signal: str = "auto", teacher_endpoint: str = "completions", prompt: str = "",
                 teacher_extra: Mapping[str, Any] | None = None, temperature: float = 2.0, alpha: float = 0.5,
                 gold_k: int = 0, student_kw: Mapping[str, Any] | None = None, seed: int = 0):
        from ..students import STUDENTS

        check(student in STUDENTS, "student", f"one of {sorted(STUDENTS)}", student)
        check(transfer in TRANSFERS, "transfer", f"one of {TRANSFERS}", transfer)
        check(isinstance(budget, int) and budget >= 1, "budget", "an integer >= 1 (teacher sequences)", budget)
        check(selection in SELECTIONS, "selection", f"one of {SELECTIONS}", selection)
        check(rounds >= 1, "rounds", ">= 1", rounds)
        check(candidates >= 1, "candidates", ">= 1", candidates)
        check(uncertainty in UNCERTAINTIES, "uncertainty", f"one of {UNCERTAINTIES}", uncertainty)
        check(diversity in DIVERSITIES, "diversity", f"one of {DIVERSITIES}", diversity)
        check(0.0 <= explore <= 1.0, "explore", "in [0, 1] (the share of each round picked at random)", explore)
        check(pool_size >= 1, "pool_size", ">= 1", pool_size)
        check(0.0 < synthetic_fraction < 1.0, "synthetic_fraction", "in (0, 1)", synthetic_fraction)
        check("{label}" in synth_instruction, "synth_instruction", "a string with a {label} slot", synth_instruction)
        check(0.0 <= synth_min_confidence <= 1.0, "synth_min_confidence", "in [0, 1]", synth_min_confidence)
        check(synth_temperature > 0, "synth_temperature", "> 0 (synthesis samples)", synth_temperature)
        check(synth_max_tokens >= 1, "synth_max_tokens", ">= 1", synth_max_tokens)
        check(teacher_signal in SIGNALS, "teacher_signal", f"one of {SIGNALS}", teacher_signal)
        check(isinstance(prompt, str), "prompt", "a string (a discrete prompt)", prompt)
        check(gold_k >= 0, "gold_k", ">= 0", gold_k)
        self.student = student
        self.transfer = transfer
        self.budget = budget
        self.selection = selection
        self.rounds = rounds
        self.candidates = candidates
        self.uncertainty = uncertainty
        self.diversity = diversity
        self.explore = explore
        self.pool_size = pool_size
        self.synthetic_fraction = synthetic_fraction
        self.synth_instruction = synth_instruction
        self.synth_min_confidence = synth_min_confidence
        self.synth_max_tokens = synth_max_tokens
        self.synth_temperature = synth_temperature
        self.teacher_signal = teacher_signal
        self.teacher_endpoint = teacher_endpoint
        self.prompt = prompt
        self.teacher_extra = dict(teacher_extra or {})
        self.temperature = temperature
        self.alpha = alpha
        self.gold_k = gold_k
        self.student_kw = dict(student_kw or {})
        self.seed = seed
        self.student_: Any = None

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        return {"student": self.student, "transfer": self.transfer, "budget": self.budget, "selection": self.selection,
                "rounds": self.rounds, "candidates": self.candidates, "uncertainty": self.uncertainty,
                "diversity": self.diversity, "explore": self.explore,
                "pool_size": self.pool_size, "synthetic_fraction": self.synthetic_fraction,
                "synth_instruction": self.synth_instruction, "synth_min_confidence": self.synth_min_confidence,
                "synth_max_tokens": self.synth_max_tokens, "synth_temperature": self.synth_temperature,
                "teacher_signal": self.teacher_signal, "teacher_endpoint": self.teacher_endpoint, "prompt": self.prompt,
                "teacher_extra": self.teacher_extra, "temperature": self.temperature, "alpha": self.alpha,
                "gold_k": self.gold_k, "student_kw": self.student_kw, "seed": self.seed}

    def teacher(self, task: Any) -> Teacher:
        """The teacher this method queries for ``task``."""
        return Teacher(task, prompt=self.prompt, extra=self.teacher_extra, signal=self.teacher_signal,
                       endpoint=self.teacher_endpoint)

    def new_student(self, n_classes: int) -> Any:
        """A fresh, untrained student."""
        from ..students import make_student

        return make_student(self.student, n_classes=n_classes, temperature=self.temperature, alpha=self.alpha,
                            seed=self.seed, **self.student_kw)

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
        search = client.with_budget(Budget(sequences=self.budget))
        self._spent = 0
        self._rng = np.random.default_rng(self.seed)
        self.inputs_: list[Any] = []
        self.teacher_logprobs_ = np.zeros((0, K))
        self.curve_: list[dict[str, Any]] = []
        self.stats_: dict[str, Any] = {"teacher_signal": self.signal_, "misses": 0, "unparsed": 0}
        self._gold_inputs, self._gold = self._gold_set(task)
        self._dev = self._dev_split(task)
        try:
            if self.transfer in ("synthetic", "both"):
                share = self.budget if self.transfer == "synthetic" else int(self.budget * self.synthetic_fraction)
                self._synthesize(search, task, share, progress=progress)
            if self.transfer in ("unlabeled", "both"):
                pool = self._pool(task, unlabeled)
                self._select_and_label(search, pool, self.budget - self._spent, progress=progress)
        except BudgetExhausted as exc:  # an enclosing budget ran out: keep what was answered
            self.stats_["stopped"] = str(exc)
        self._check_teacher_labels(task)
        self.student_ = self._train(K)
        self._record()
        self.budget_spent_ = search.budget.summary()
        self.eval_spent_ = Budget().summary()  # dev accuracy is the student's: no teacher query
        self.best_prompt_ = self.prompt
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
        counts = np.bincount(self.teacher_logprobs_.argmax(axis=1), minlength=len(task.labels))
        share = counts / n
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
        if self.gold_k == 0:
            return [], np.zeros(0, dtype=np.int64)
        fs = task.few_shot(seed=self.seed, k=self.gold_k)
        return [_as_input(ex) for ex in fs.train], np.array([ex.label for ex in fs.train], dtype=np.int64)

    def _pool(self, task: Any, unlabeled: Sequence[Any] | None) -> list[Any]:
        """Unlabeled inputs, deduplicated, minus what is already in the transfer set, ``pool_size`` at most."""
        raw = task.split("train") if unlabeled is None else list(unlabeled)
        seen = {normalize_text(x if isinstance(x, str) else " ".join(x)) for x in self.inputs_}
        pool = []
        for x in raw:
            x = _as_input(x) if hasattr(x, "text") else (x if isinstance(x, str) else tuple(x))
            key = normalize_text(x if isinstance(x, str) else " ".join(x))
            if key and key not in seen:
                seen.add(key)
                pool.append(x)
        check(len(pool) > 0, "unlabeled", "at least one text not already in the transfer set", 0)
        if len(pool) > self.pool_size:
            idx = np.sort(self._rng.choice(len(pool), size=self.pool_size, replace=False))
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
        check(not getattr(task, "pair", False), "transfer", "'unlabeled' for a sentence-pair task", self.transfer)
        K = len(task.labels)
        kind = _KINDS.get(task.name, f"one example input for the text classification task {task.name!r}")
        instr = [self.synth_instruction.format(label=lab, kind=kind) for lab in task.labels]
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
                                         max_tokens=self.synth_max_tokens, temperature=self.synth_temperature,
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
            keep = [i for i, c in enumerate(cls) if not np.isnan(p[i]).any() and p[i, c] >= self.synth_min_confidence]
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
        if self.selection == "random":
            order = self._rng.permutation(len(pool))[:share]
            sizes = _round_sizes(share, self.rounds)
            at = 0
            for size in sizes:  # the same rounds as active selection, for comparable curves
                batch = [pool[i] for i in order[at:at + size]]
                at += size
                self._add(batch, self._ask_teacher(client, batch, progress=progress, desc="teacher"))
                if len(sizes) > 1 and self.student == "minilm-head":  # a curve point costs a fine-tune otherwise
                    self._record(self._train(len(self.teacher_.task.labels)))
            return
        self._active(client, pool, share, progress=progress)

    def _active(self, client: Any, pool: list[Any], share: int, *, progress: bool) -> None:
        """Rounds of uncertainty shortlist + k-center greedy diversity over frozen MiniLM embeddings."""
        from ..students.minilm import shared_encoder

        K = len(self.teacher_.task.labels)
        emb = shared_encoder().embed(list(self.inputs_) + pool, progress=progress)
        n_known = len(self.inputs_)  # synthetic texts already labelled count as centers
        labelled = list(range(n_known))
        unlabelled = np.arange(n_known, n_known + len(pool))
        for r, m in enumerate(_round_sizes(share, self.rounds)):
            if r == 0 and not labelled:
                # round 0: nothing to be uncertain about yet -- a diverse seed set
                pick = (self._diverse(emb, unlabelled, [], m) if self.diversity != "none" else
                        [int(i) for i in self._rng.choice(unlabelled, size=min(m, len(unlabelled)), replace=False)])
            else:
                student = self._train(K)
                self._record(student)
                q = student.predict_proba([pool[i - n_known] for i in unlabelled], progress=False)
                u = uncertainty(q, self.uncertainty)
                n_random = round(self.explore * m)
                short = unlabelled[np.argsort(-u, kind="stable")[:self.candidates * (m - n_random)]]
                pick = self._diverse(emb, short, labelled, m - n_random)
                if n_random:
                    rest = np.setdiff1d(unlabelled, pick)
                    pick += [int(i) for i in self._rng.choice(rest, size=min(n_random, len(rest)), replace=False)]
            batch = [pool[i - n_known] for i in pick]
            self._add(batch, self._ask_teacher(client, batch, progress=progress, desc=f"teacher (round {r})"))
            labelled += pick
            unlabelled = np.setdiff1d(unlabelled, pick)

    def _diverse(self, emb: np.ndarray, shortlist: np.ndarray, labelled: list[int], m: int) -> list[int]:
        """m of the shortlist: k-center greedy, k-means medoids, or simply the m most uncertain."""
        if m <= 0:
            return []
        if self.diversity == "kcenter":
            return k_center_greedy(emb, shortlist, labelled, m, self._rng)
        if self.diversity == "kmeans":
            return k_means_medoids(emb, shortlist, m, int(self._rng.integers(2**31)))
        return [int(i) for i in shortlist[:m]]

    # -- student ------------------------------------------------------------------------------------

    def _train(self, K: int) -> Any:
        """A student trained on the transfer set (soft/hard teacher targets) plus any gold labels."""
        inputs = list(self.inputs_) + self._gold_inputs
        check(len(inputs) > 0, "budget", "enough for at least one teacher answer or gold label", self.budget)
        t = np.concatenate([self.teacher_logprobs_, np.full((len(self._gold_inputs), K), np.nan)])
        y = np.concatenate([np.full(len(self.inputs_), -1, dtype=np.int64), self._gold])
        return self.new_student(K).fit(inputs, teacher_logprobs=t if len(self.inputs_) else None,
                                       gold=y if len(self._gold_inputs) else None)

    def _record(self, student: Any = None) -> None:
        """One curve point: teacher sequences so far and the student's accuracy on the gold dev split."""
        student = student or self.student_
        acc = None
        if self._dev:
            pred = student.predict([_as_input(ex) for ex in self._dev], progress=False)
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
        return self.student_.predict([_as_input(ex) if hasattr(ex, "text") else ex for ex in examples],
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


def _round_sizes(total: int, rounds: int) -> list[int]:
    """``total`` split into at most ``rounds`` near-equal positive parts."""
    rounds = max(1, min(rounds, total))
    base = total // rounds
    return [base + (1 if i < total - base * rounds else 0) for i in range(rounds)]


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
