"""PromptBoosting (Hou et al., ICML 2023): a boosted ensemble of prompt + verbalizer weak
learners, from forward passes only.

The model runs once per (template, example) and the next-token distribution at the answer
position is kept; everything after that is arithmetic on those distributions, no query:

1. **Screening** (one round, template t, example weights w summing to 1, N training examples):
   score[c, v] = sum_n N * w_n * p_t(v | x_n) * (+1 if y_n = c else -1). Each token goes to the
   class where its score is highest, and each class keeps its ``tokens_per_class`` best tokens
   (k = 50 for two classes, 10 for three or four, 5 beyond: the paper's SST-2/MR/RTE, SNLI/AG News
   and TREC settings).
2. **Weak learner**: the candidate verbalizers are the product of the per-class lists (for two
   classes also every pair swapped); a verbalizer predicts argmax_c p_t(v_c | x). The one with
   the lowest weighted training error err = sum_n w_n [pred_n != y_n] wins (at most 20,000
   candidates, the official cap, a seeded subset beyond it; the product order breaks ties, so
   the best-screened tokens win).
3. **SAMME**: alpha = ln((1 - err) / err) + ln(K - 1); w_n *= exp(alpha * [pred_n != y_n]),
   renormalised. A learner with err >= 1 - 1/K is no better than chance and is skipped (the
   weights stay). The template of each round is drawn at random from the pool (seeded, with
   replacement, as the official ``TemplateManager`` does).
4. **Ensemble length** is chosen on the few-shot dev split: the prefix of the learner sequence
   with the best dev metric (ties: the longer one, as the official code's ``>=``).
5. **Prediction**: the alpha-weighted vote, argmax_c sum_m alpha_m [h_m(x) = c].

**err = 0.** A learner that makes no weighted training error has alpha = +inf. The official
code does not guard it (``math.log((1 - error) / error)`` raises ``ZeroDivisionError`` there);
METHODS.md says it falls back to the best single learner, which is what happens here: the
perfect learner ends boosting (its weights update would change nothing, so every later round
would find it again), and any ensemble prefix that holds it votes as that learner alone. The
results say so (``extra["perfect_learner"]``).

**Where the distributions come from.** bbox-lfm's server has the ``next_token_logprobs``
extension (:mod:`bbox_lfm.serve.next_token`): the full vocabulary, float16 base64, one cached
answer per (template, example); screening then sees every token, as in the paper. A provider
without it (a hosted chat or completions API) shows the top k <= 20 tokens only: screening runs
over the union of the returned tokens, an unreturned token counts as probability 0 (it lies
below every returned one), and the results say the screening was restricted and how much
probability mass the returned tokens held (``extra["mass"]``).

**Cost**, counted the shared way: one call = one template over the training batch (one request
on the local server, one per example on a chat API: ``requests`` in the budget); the dev passes
are counted apart, as every method's dev scoring. Training: T templates x (N_train + N_dev) forward passes. At test time only
what the ensemble needs is scored: per template of the chosen ensemble, the probabilities of
its verbalizers' tokens (the extension with ``ids``), batched and cached, so at most one forward
pass per distinct template (``extra["passes_per_test_example"]``).

**The template pool**: the task's templates, the user's (``templates=[...]``: strings or
``{"template": ...}``; an ``{answer}`` marker may end a template and is dropped; one anywhere
else is a ConfigError: the answer must follow the filled template), and on request templates the provider
writes itself (``generate_templates=n``, through the client with the prompt
:data:`GENERATION_PROMPT`, sampled at temperature 0.7 with one ``sample_id`` each, so cached),
at most ``max_templates`` in all.
"""

from __future__ import annotations

import base64
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..budget import Budget
from ..errors import BudgetExhausted, CapabilityError, ConfigError, MalformedResponseError, check
from ..tasks import fill, metrics_from_predictions
from ..tasks.task import validate_template
from ..types import Query
from .base import Method, register

__all__ = [
    "GENERATION_PROMPT", "PromptBoosting", "candidate_verbalizers", "class_token_lists", "default_tokens_per_class",
    "no_better_than_chance", "samme_alpha", "screening_scores", "update_weights", "vote", "weak_learner",
]

EXTENSION = "next_token_logprobs"
MAX_CANDIDATES = 20_000  # the official code's cap on verbalizers tried per round
TEST_CHUNK = 32  # prompts per test-time request: fixed, so a rerun sends the same requests
SOURCES = ("auto", "full", "topk")
ANSWER = "{answer}"

#: The request for provider-written templates (``generate_templates=n``); ``{examples}`` holds two
#: training examples per class as "Text: ...\nLabel: ..." blocks.
GENERATION_PROMPT = (
    "Here are examples of a text classification task with the labels {labels}.\n\n{examples}\n\n"
    "Write one prompt template for this task. Write {{text}} where the text goes{pair}. The template "
    "must end right where a one-word answer follows, like \"{{text}} It was\". Reply with the template "
    "only, on one line."
)


# -- the formulas (pure functions, tested by hand) -------------------------------------------

def default_tokens_per_class(n_classes: int) -> int:
    """The paper's k: 50 for two classes, 10 for three or four, 5 beyond."""
    return 50 if n_classes == 2 else 10 if n_classes <= 4 else 5


def screening_scores(P: np.ndarray, y: np.ndarray, w: np.ndarray, n_classes: int) -> np.ndarray:
    """score[c, v] = sum_n N w_n P[n, v] (+1 if y_n = c else -1), shape [K, V]."""
    n = len(y)
    signs = np.where(np.arange(n_classes)[:, None] == np.asarray(y)[None, :], 1.0, -1.0)   # [K, N]
    return (signs * (n * np.asarray(w, dtype=np.float64))[None, :]) @ np.asarray(P, dtype=np.float64)


def class_token_lists(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Each token goes to its best class (argmax over classes); each class keeps its k tokens of
    highest score, best first (fewer when fewer tokens go to it: the official code pads such a
    list with other classes' tokens in arbitrary order). A class that wins no token takes its
    best-scored token that no other list holds, so every class can be spoken."""
    n_classes = scores.shape[0]
    owner = scores.argmax(axis=0)
    lists = []
    for c in range(n_classes):
        mine = np.flatnonzero(owner == c)
        lists.append(mine[np.argsort(-scores[c, mine], kind="stable")][:k])
    for c in range(n_classes):
        if len(lists[c]) == 0:
            taken = set(np.concatenate(lists).tolist())
            order = np.argsort(-scores[c], kind="stable")
            # every token taken (fewer tokens than classes): the best one, shared
            lists[c] = np.array([next((v for v in order if int(v) not in taken), order[0])])
    return lists


def candidate_verbalizers(lists: Sequence[np.ndarray]) -> np.ndarray:
    """The product of the per-class lists, shape [m, K]; for two classes also every pair swapped."""
    prod = np.array(list(itertools.product(*[list(map(int, lst)) for lst in lists])), dtype=np.int64)
    if len(lists) == 2:
        prod = np.concatenate([prod, prod[:, ::-1]])
    return prod


def weak_learner(P: np.ndarray, y: np.ndarray, w: np.ndarray, candidates: np.ndarray) -> tuple[int, float, np.ndarray]:
    """``(index, err, predictions)`` of the candidate verbalizer with the lowest weighted error
    sum_n w_n [argmax_c P[n, cand_c] != y_n]; the first one wins a tie."""
    best, best_err, best_pred = -1, math.inf, np.zeros(0, dtype=np.int64)
    y = np.asarray(y)
    for at in range(0, len(candidates), 2048):
        cand = candidates[at:at + 2048]
        pred = P[:, cand].argmax(axis=2)                        # [N, m]: the class each candidate says
        err = np.asarray(w, dtype=np.float64) @ (pred != y[:, None])
        i = int(np.argmin(err))
        if err[i] < best_err:
            best, best_err, best_pred = at + i, float(err[i]), pred[:, i]
    return best, best_err, best_pred


def samme_alpha(err: float, n_classes: int) -> float:
    """SAMME's learner weight, ln((1 - err) / err) + ln(K - 1), for 0 < err < 1."""
    check(0 < err < 1, "err", "in (0, 1) (err = 0 is handled by the caller)", err)
    return math.log((1 - err) / err) + math.log(n_classes - 1)


def no_better_than_chance(err: float, n_classes: int) -> bool:
    """SAMME's skip rule: a learner with err >= 1 - 1/K gets alpha <= 0 and is not used (compared as
    err * K >= K - 1, with a rounding margin, so err = 2/3 at K = 3 counts as chance)."""
    return err * n_classes >= n_classes - 1 - 1e-12


def update_weights(w: np.ndarray, alpha: float, wrong: np.ndarray) -> np.ndarray:
    """w_n * exp(alpha * [wrong_n]), renormalised to sum 1."""
    w = np.asarray(w, dtype=np.float64) * np.exp(alpha * np.asarray(wrong, dtype=np.float64))
    return w / w.sum()


def vote(preds: np.ndarray, alphas: Sequence[float | None], n_classes: int) -> np.ndarray:
    """The alpha-weighted vote argmax_c sum_m alpha_m [preds[m] = c] (ties: the lower class);
    a learner with alpha None (err = 0, alpha = +inf) decides alone."""
    preds = np.asarray(preds).reshape(len(alphas), -1)
    for m, a in enumerate(alphas):
        if a is None:
            return preds[m].copy()
    score = np.zeros((preds.shape[1], n_classes))
    for m, a in enumerate(alphas):
        score[np.arange(preds.shape[1]), preds[m]] += a
    return score.argmax(axis=1)


# -- distributions ----------------------------------------------------------------------------

def _decode_next_token(item: Any) -> tuple[np.ndarray | None, np.ndarray, float]:
    """``(ids or None, log-probabilities, mass)`` of one choice's ``next_token_logprobs``."""
    if not isinstance(item, dict) or "logprobs" not in item:
        raise MalformedResponseError(f"the answer has no {EXTENSION}; does the server have the extension?")
    lp = np.frombuffer(base64.b64decode(item["logprobs"]), dtype="<f2").astype(np.float32)
    ids = None if item.get("ids") is None else np.frombuffer(base64.b64decode(item["ids"]), dtype="<i4").astype(
        np.int64)
    return ids, lp, float(item.get("mass", float(np.exp(lp.astype(np.float64)).sum())))


def _by_length(prompts: Sequence[str], size: int) -> list[list[int]]:
    """Indices of ``prompts`` in chunks of ``size`` prompts of similar length (less padding)."""
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    return [order[at:at + size] for at in range(0, len(order), size)]


@register
class PromptBoosting(Method):
    """PromptBoosting. Hyperparameters (defaults = the paper's):

    n_rounds: boosting rounds (weak learners tried; skipped ones count).
    tokens_per_class: k tokens per class after screening (None: 50 / 10 / 5 by class count).
    max_templates: templates in the pool at most (each costs one call and one dev pass).
    templates: the user's templates (strings or ``{"template": ...}``), after the task's.
    generate_templates: how many templates to ask the provider to write (0: none).
    budget: search calls (template passes over the training batch); dev passes are apart.
    seed: the few-shot split and the template draws.
    source: ``auto`` (the extension when the provider has it, else top-k), ``full`` or ``topk``.
    top_n: with the extension, screen only the top_n tokens of each distribution (None: all).
    endpoint, top_k: the top-k path's endpoint (``completions`` or ``chat``) and k (None: the
      provider's maximum, 20 on hosted chat APIs).
    """

    name: ClassVar[str] = "promptboosting"
    needs: ClassVar[tuple[str, ...]] = ()
    tiny_config: ClassVar[dict[str, Any]] = {"n_rounds": 4, "tokens_per_class": 3, "max_templates": 2, "budget": 4}
    contract_exempt: ClassVar[dict[str, str]] = {
        "capability": "no single capability is needed: the next_token_logprobs extension or top-k logprobs "
                      "will do; lacking both raises CapabilityError before anything is sent "
                      "(tests/methods/test_promptboosting.py)"}

    def __init__(self, *, n_rounds: int = 200, tokens_per_class: int | None = None, max_templates: int = 10,
                 templates: Sequence[Any] | None = None, generate_templates: int = 0, budget: int = 10,
                 seed: int = 42, source: str = "auto", top_n: int | None = None, endpoint: str = "completions",
                 top_k: int | None = None):
        check(isinstance(n_rounds, int) and n_rounds >= 1, "n_rounds", "an integer >= 1", n_rounds)
        check(tokens_per_class is None or (isinstance(tokens_per_class, int) and tokens_per_class >= 1),
              "tokens_per_class", "None or an integer >= 1", tokens_per_class)
        check(isinstance(max_templates, int) and max_templates >= 1, "max_templates", "an integer >= 1", max_templates)
        check(templates is None or (isinstance(templates, (list, tuple)) and all(
            isinstance(t, str) or (isinstance(t, dict) and isinstance(t.get("template"), str)) for t in templates)),
              "templates", "None or a list of strings or {\"template\": ...} tables", templates)
        check(isinstance(generate_templates, int) and generate_templates >= 0, "generate_templates",
              "an integer >= 0", generate_templates)
        check(isinstance(budget, int) and budget >= 0, "budget", "an integer >= 0", budget)
        check(isinstance(seed, int), "seed", "an integer", seed)
        check(source in SOURCES, "source", f"one of {SOURCES}", source)
        check(top_n is None or (isinstance(top_n, int) and top_n >= 1), "top_n", "None or an integer >= 1", top_n)
        check(endpoint in ("completions", "chat"), "endpoint", "'completions' or 'chat'", endpoint)
        check(top_k is None or (isinstance(top_k, int) and top_k >= 1), "top_k", "None or an integer >= 1", top_k)
        self.n_rounds = n_rounds
        self.tokens_per_class = tokens_per_class
        self.max_templates = max_templates
        self.templates = None if templates is None else [t if isinstance(t, str) else dict(t) for t in templates]
        for i, t in enumerate(self.templates or ()):
            text = t if isinstance(t, str) else t["template"]
            check(ANSWER not in text or (text.rstrip().endswith(ANSWER) and text.count(ANSWER) == 1),
                  f"templates[{i}]", f"a template with the answer position at the end ({ANSWER} last, or absent: "
                  "the answer follows the filled template)", text)
        self.generate_templates = generate_templates
        self.budget = budget
        self.seed = seed
        self.source = source
        self.top_n = top_n
        self.endpoint = endpoint
        self.top_k = top_k

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        return {k: getattr(self, k) for k in (
            "n_rounds", "tokens_per_class", "max_templates", "templates", "generate_templates", "budget", "seed",
            "source", "top_n", "endpoint", "top_k")}

    # -- set-up (nothing is sent) ---------------------------------------------------------------

    def _resolve_source(self, client: Any) -> str:
        """``full`` or ``topk`` for this provider, or CapabilityError before anything is sent."""
        caps = client.capabilities
        name = client.profile.name
        if self.source in ("auto", "full") and caps.has(EXTENSION):
            return "full"
        if self.source == "full":
            raise CapabilityError(EXTENSION, name, needed_by="PromptBoosting with source='full'",
                                  hint="use source='topk' to screen the returned top-k tokens only")
        if self.endpoint == "chat" and not caps.chat:
            raise CapabilityError("chat", name, needed_by="PromptBoosting with endpoint='chat'")
        has_lp, limit = self._topk_limit(caps)
        if not (has_lp and limit >= 1):
            raise CapabilityError("chat_logprobs" if self.endpoint == "chat" else "logprobs", name,
                                  needed_by="PromptBoosting",
                                  hint=f"it needs top-k logprobs or the {EXTENSION} extension of bbox-lfm's server")
        return "topk"

    def _topk_limit(self, caps: Any) -> tuple[bool, int]:
        """Whether the endpoint returns top-k logprobs, and its k limit (hosted chat: 20, legacy
        Completions: 5)."""
        if self.endpoint == "chat":
            return bool(caps.chat_logprobs), int(caps.chat_max_top_logprobs)
        return bool(caps.logprobs), int(caps.max_top_logprobs)

    def _own_templates(self, task: Any) -> list[str]:
        """The task's and the user's templates, in that order, deduplicated, ``{answer}`` dropped.

        A run that starts from one template (``Task.with_template``, as the harness and ``tune``
        do) keeps only that one in ``task.templates``; the pool is still all of the task's, read
        again from its source, in their own order (so the pool does not depend on the start)."""
        own = [t for t, _ in task.templates]
        if getattr(task, "source", ""):
            from ..tasks import load_task

            try:
                own = [t for t, _ in load_task(task.source).templates] + own
            except (ConfigError, OSError):  # a task built in code: its own templates only
                pass
        raw = own + [t if isinstance(t, str) else t["template"] for t in self.templates or ()]
        usable: list[str] = []
        for t in raw:
            if ANSWER in t:
                t = t.rstrip().removesuffix(ANSWER).rstrip()
            validate_template(t, pair=task.pair, what="templates[...]")
            if t not in usable:
                usable.append(t)
        return usable

    def projected_calls(self, task: Any = None) -> int | None:
        """Search calls: one pass per template of the pool (at most ``max_templates`` and ``budget``)."""
        if task is None:
            return None
        return min(len(self._own_templates(task)) + self.generate_templates, self.max_templates, self.budget)

    # -- fit -----------------------------------------------------------------------------------

    def fit(self, client: Any, task: Any) -> PromptBoosting:
        """Cache the distributions of each template on the few-shot train and dev splits of
        ``seed``, boost, and choose the ensemble length on dev."""
        self.source_ = self._resolve_source(client)
        cap = self._topk_limit(client.capabilities)[1]
        self.top_k_used_ = min(self.top_k or cap, cap) if self.source_ == "topk" else None
        split = task.few_shot(seed=self.seed)
        train, dev = list(split.train), list(split.dev)
        K = len(task.labels)
        own = self._own_templates(task)
        if not own and not self.generate_templates:
            raise ConfigError("templates must include at least one template with the answer position at the end "
                              "(the answer follows the filled template); got none")
        if self.budget < 1:
            raise ConfigError(f"budget must be at least 1 call (one template over the {len(train)} training "
                              f"examples; the {len(dev)} dev examples are counted apart); got {self.budget}")
        self.n_classes_ = K
        self.k_ = self.tokens_per_class or default_tokens_per_class(K)
        self.pair_ = task.pair
        scorer = client.with_budget(Budget())
        search = client.with_budget(Budget(calls=self.budget))  # calls: template passes, any provider
        self.generation_spent_ = None
        self.stopped_by_ = "rounds"
        generated: list[str] = []
        if self.generate_templates:
            try:
                generated = self._generate(client.with_budget(Budget()), task, train)
            except BudgetExhausted:
                self.stopped_by_ = "BudgetExhausted"
        pool = (own + [t for t in generated if t not in own])[: self.max_templates]
        if not pool:
            raise ConfigError("templates must include at least one template with the answer position at the end; "
                              "the provider wrote none usable and the task and the user gave none")

        # 1. one pass per template over train (search budget) and dev (apart), cached
        self.templates_: list[str] = []
        dists: list[dict[str, Any]] = []
        for t in pool[: self.budget]:
            try:
                tr = self._distributions(search, t, train)
                dv = self._distributions(scorer, t, dev, vocab=tr["vocab"])
            except BudgetExhausted:
                self.stopped_by_ = "BudgetExhausted"
                break
            self.templates_.append(t)
            dists.append({"train": tr, "dev": dv})

        # 2. boosting: arithmetic on the cached distributions only
        y = np.array([ex.label for ex in train])
        y_dev = np.array([ex.label for ex in dev])
        rng = np.random.default_rng(self.seed)
        w = np.full(len(train), 1.0 / len(train))
        self.learners_: list[dict[str, Any]] = []
        self.history_: list[dict[str, Any]] = []
        dev_preds: list[np.ndarray] = []
        self.perfect_learner_ = False
        for r in range(self.n_rounds if dists else 0):
            tpl = int(rng.integers(len(dists)))
            P = dists[tpl]["train"]["P"]
            lists = class_token_lists(screening_scores(P, y, w, K), self.k_)
            cands = candidate_verbalizers(lists)
            if len(cands) > MAX_CANDIDATES:
                cands = cands[np.sort(rng.choice(len(cands), MAX_CANDIDATES, replace=False))]
            i, err, pred = weak_learner(P, y, w, cands)
            wrong = pred != y
            step: dict[str, Any] = {"round": r, "template": tpl, "err": err, "candidates": len(cands)}
            self.history_.append(step)
            if no_better_than_chance(err, K):                              # alpha <= 0: skip, weights stay
                step["skipped"] = True
                continue
            columns = cands[i]
            keys = dists[tpl]["train"]["vocab"]
            tokens = [int(c) for c in columns] if keys is None else [keys[int(c)] for c in columns]
            alpha = None if not wrong.any() else samme_alpha(err, K)
            self.learners_.append({"template": tpl, "tokens": tokens, "alpha": alpha, "err": err,
                                   "train_accuracy": float((~wrong).mean())})
            dev_preds.append(dists[tpl]["dev"]["P"][:, columns].argmax(axis=1) if len(dev) else np.zeros(0, int))
            if alpha is None:                                             # err = 0: alpha = +inf
                self.perfect_learner_ = True
                why = "perfect learner (err = 0)"
                self.stopped_by_ = why if self.stopped_by_ == "rounds" else f"{self.stopped_by_}; {why}"
                break
            w = update_weights(w, alpha, wrong)

        # 3. ensemble length on dev (ties: the longer prefix)
        self.curve_: list[dict[str, Any]] = []
        self.ensemble_size_ = len(self.learners_)
        best = -math.inf
        metric = getattr(task, "metric", "accuracy")
        for m in range(1, len(self.learners_) + 1):
            if not len(dev):
                break
            pred = vote(np.stack(dev_preds[:m]), [lr["alpha"] for lr in self.learners_[:m]], K)
            mt = metrics_from_predictions(y_dev.tolist(), pred, K)
            self.curve_.append({"calls": len(self.templates_), "learners": m, "dev_accuracy": mt.accuracy,
                                "dev_f1": mt.f1})
            if mt.get(metric) >= best:
                best, self.ensemble_size_ = mt.get(metric), m

        self.token_text_: dict[str, str] = {}
        self.budget_spent_ = search.budget.summary()
        self.eval_spent_ = scorer.budget.summary()
        self.calls_ = len(self.templates_)
        self.extra_ = self._extra(dists, len(train), len(dev))
        return self

    def _extra(self, dists: list[dict[str, Any]], n_train: int, n_dev: int) -> dict[str, Any]:
        mass = [float(m) for d in dists for part in ("train", "dev") for m in d[part]["mass"]]
        used = self.learners_[: self.ensemble_size_]
        return {
            "source": self.source_,
            "screening": "full vocabulary" if self.source_ == "full" and self.top_n is None else
            (f"top {self.top_n} tokens of each distribution" if self.source_ == "full" else
             f"restricted to the top-{self.top_k_used_} tokens the provider returned ({self.endpoint})"),
            "restricted": not (self.source_ == "full" and self.top_n is None),
            "mass": {"mean": float(np.mean(mass)) if mass else None, "min": float(np.min(mass)) if mass else None},
            "screened_tokens": [int(d["train"]["P"].shape[1]) for d in dists],
            "templates": self.templates_,
            "generation_spent": self.generation_spent_,
            "tokens_per_class": self.k_, "rounds": len(self.history_),
            "skipped": sum(1 for h in self.history_ if h.get("skipped")), "learners": len(self.learners_),
            "ensemble_size": self.ensemble_size_, "perfect_learner": self.perfect_learner_,
            "stopped_by": self.stopped_by_, "calls": self.calls_,
            "forward_passes_training": len(self.templates_) * (n_train + n_dev),
            "passes_per_test_example": len({lr["template"] for lr in used}),
        }

    # -- queries -------------------------------------------------------------------------------

    def _queries(self, client: Any, prompts: list[str], chunk: int, spec: dict[str, Any] | None) -> list[Query]:
        """The requests for ``prompts`` (in the order given): the extension with ``spec``, or top-k."""
        if self.source_ == "full":
            return [Query(prompt=tuple(prompts[i:i + chunk]), max_tokens=0, extra={EXTENSION: spec or {}})
                    for i in range(0, len(prompts), chunk)]
        k = self.top_k_used_
        if self.endpoint == "chat":
            return [Query(endpoint="chat", messages=({"role": "user", "content": p},), max_tokens=1, logprobs=1,
                          top_logprobs=k) for p in prompts]
        return [Query(prompt=tuple(prompts[i:i + chunk]), max_tokens=1, logprobs=k)
                for i in range(0, len(prompts), chunk)]

    def _answers(self, client: Any, prompts: list[str], chunk: int, spec: dict[str, Any] | None = None) -> list[Any]:
        """One answer per prompt (the extension's dict, or the top-k {token: logprob} map); one call."""
        with client.one_call():
            responses = client.send_many(self._queries(client, prompts, chunk, spec))
        out: list[Any] = []
        for resp in responses:
            for choice in resp.choices:
                if self.source_ == "full":
                    out.append(choice.extra.get(EXTENSION))
                else:
                    if choice.logprobs is None or not choice.logprobs.top_logprobs:
                        raise MalformedResponseError("the answer has no top logprobs; is logprobs supported?")
                    out.append(dict(choice.logprobs.top_logprobs[0]))
        if len(out) != len(prompts):
            raise MalformedResponseError(f"expected {len(prompts)} answers, got {len(out)}")
        return out

    def _distributions(self, client: Any, template: str, examples: Sequence[Any],
                       vocab: list[str] | None = None) -> dict[str, Any]:
        """``{"P": probabilities [n, V], "vocab": None (token ids) or the token strings, "mass"}``
        of ``template`` over ``examples``; top-k strings outside ``vocab`` (given for dev) drop out."""
        prompts = [fill(template, ex) for ex in examples]
        if not prompts:
            return {"P": np.zeros((0, 0 if vocab is not None else 1), dtype=np.float32), "vocab": vocab, "mass": []}
        chunk = max(1, client.capabilities.max_batch)
        spec = {} if self.top_n is None else {"top_n": self.top_n}
        answers = self._answers(client, prompts, chunk, spec)
        mass = []
        if self.source_ == "full":
            rows = []
            for item in answers:
                ids, lp, m = _decode_next_token(item)
                mass.append(m)
                if ids is None:
                    rows.append(np.exp(lp))
                else:
                    row = np.zeros(int(item["vocab_size"]), dtype=np.float32)
                    row[ids] = np.exp(lp)
                    rows.append(row)
            return {"P": np.stack(rows).astype(np.float32), "vocab": None, "mass": mass}
        if vocab is None:
            vocab = sorted({tok for top in answers for tok in top})
        col = {tok: j for j, tok in enumerate(vocab)}
        P = np.zeros((len(prompts), len(vocab)), dtype=np.float32)
        for n, top in enumerate(answers):
            mass.append(float(sum(math.exp(v) for v in top.values())))
            for tok, v in top.items():
                if tok in col:
                    P[n, col[tok]] = math.exp(v)
        return {"P": P, "vocab": vocab, "mass": mass}

    def _generate(self, client: Any, task: Any, train: Sequence[Any]) -> list[str]:
        """Templates the provider writes from two training examples per class (see :data:`GENERATION_PROMPT`)."""
        shown = [ex for c in range(len(task.labels)) for ex in [e for e in train if e.label == c][:2]]
        examples = "\n\n".join(
            f"Text: {ex.text}" + (f"\nSecond text: {ex.text_pair}" if ex.text_pair else "") +
            f"\nLabel: {task.labels[ex.label]}" for ex in shown)
        prompt = GENERATION_PROMPT.format(labels=", ".join(task.labels), examples=examples,
                                          pair=" and {text_pair} where the second text goes" if task.pair else "")
        endpoint = "chat" if client.capabilities.chat else "completions"
        out: list[str] = []
        self.generation_spent_ = client.budget.summary()
        for i in range(self.generate_templates):
            text = client.generate([prompt], max_tokens=48, temperature=0.7, endpoint=endpoint, sample_id=i)[0]
            self.generation_spent_ = client.budget.summary()
            line = next((ln.strip().strip("\"'`") for ln in text.splitlines() if "{text}" in ln), "")
            line = line.removesuffix(ANSWER).rstrip()
            try:
                validate_template(line, pair=task.pair)
            except ConfigError:
                continue
            if line not in out:
                out.append(line)
        return out

    # -- using the result ------------------------------------------------------------------------

    def predict(self, client: Any, examples: Sequence[Any]) -> np.ndarray:
        """The alpha-weighted vote of the chosen ensemble. Only what it needs is scored: per
        template, its verbalizers' tokens (the extension with ``ids``; top-k on other providers)."""
        if not hasattr(self, "learners_"):
            raise ConfigError("predict must be called after fit (or load); got an unfitted PromptBoosting")
        examples = list(examples)
        used = self.learners_[: self.ensemble_size_]
        if not examples or not used:
            return np.zeros(len(examples), dtype=np.int64)
        preds = np.zeros((len(used), len(examples)), dtype=np.int64)
        misses = 0
        for t in sorted({lr["template"] for lr in used}):
            members = [m for m, lr in enumerate(used) if lr["template"] == t]
            needed = sorted({tok for m in members for tok in used[m]["tokens"]}, key=str)
            prompts = [fill(self.templates_[t], ex) for ex in examples]
            col = {tok: j for j, tok in enumerate(needed)}
            P = np.zeros((len(examples), len(needed)), dtype=np.float32)
            chunks = _by_length(prompts, TEST_CHUNK)
            for idx in chunks:
                answers = self._answers(client, [prompts[i] for i in idx], TEST_CHUNK,
                                        {"ids": needed} if self.source_ == "full" else None)
                for i, item in zip(idx, answers):
                    if self.source_ == "full":
                        _, lp, _ = _decode_next_token(item)
                        P[i] = np.exp(lp)
                        self.token_text_.update({str(tok): text for tok, text in zip(needed, item.get("tokens", ()))})
                    else:
                        for tok in needed:
                            if tok in item:
                                P[i, col[tok]] = math.exp(item[tok])
                            else:
                                misses += 1
            for m in members:
                preds[m] = P[:, [col[tok] for tok in used[m]["tokens"]]].argmax(axis=1)
        self.predict_misses_ = getattr(self, "predict_misses_", 0) + misses
        self.predict_passes_ = getattr(self, "predict_passes_", 0) + len(examples) * len({lr["template"] for lr in used})
        return vote(preds, [lr["alpha"] for lr in used], self.n_classes_)

    @property
    def best_prompt_(self) -> dict[str, Any]:
        """The ensemble as JSON: templates, and per learner its template, verbalizer and alpha
        (token ids show as text once :meth:`predict` has seen them)."""
        used = self.learners_[: self.ensemble_size_]
        return {"templates": self.templates_, "ensemble_size": self.ensemble_size_,
                "learners": [{"template": lr["template"], "alpha": lr["alpha"],
                              "verbalizer": [self.token_text_.get(str(tok), tok) for tok in lr["tokens"]]}
                             for lr in used]}

    def state(self) -> dict[str, Any]:
        """The learned state as JSON."""
        return {"source": self.source_, "n_classes": self.n_classes_, "templates": self.templates_,
                "learners": self.learners_, "ensemble_size": self.ensemble_size_, "token_text": self.token_text_,
                "curve": self.curve_, "history": self.history_, "budget_spent": self.budget_spent_,
                "eval_spent": self.eval_spent_, "extra": self.extra_, "top_k_used": self.top_k_used_}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.source_ = state["source"]
        self.n_classes_ = int(state["n_classes"])
        self.templates_ = list(state["templates"])
        self.learners_ = [dict(lr) for lr in state["learners"]]
        self.ensemble_size_ = int(state["ensemble_size"])
        self.token_text_ = dict(state["token_text"])
        self.curve_ = list(state["curve"])
        self.history_ = list(state["history"])
        self.budget_spent_ = dict(state["budget_spent"])
        self.eval_spent_ = dict(state["eval_spent"])
        self.extra_ = dict(state["extra"])
        self.top_k_used_ = state.get("top_k_used")
