"""PRM/ORM training with Monte-Carlo step labels (Math-Shepherd, Wang et al. 2024).

1. Sample ``samples_per_problem`` solutions per training problem from the policy.
2. For every step prefix (up to and including its delimiter) roll out ``rollouts`` completions
   from the policy; the step's label is the fraction that reach the correct answer (``soft``) or
   whether any does (``hard``). The last step's label is the solution's own correctness.
3. Train a reward model (a policy-interface model with a reward head) by binary cross-entropy at
   every step's last token (PRM), or with the final correctness at every step end (ORM; Cobbe et
   al. 2021). A ``scalar`` head fine-tunes the whole model; an ``lm_value`` head (the
   log-probability verifier of :mod:`ttc.models.reward`) trains only its value head and feature
   weights over a frozen LM.

Quality is measured on held-out sampled solutions: ROC-AUC of the final score for final
correctness, and step accuracy against the task's exact step checker (score > 0.5 vs verdict).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
import uuid
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from ttc import checkpoint
from ttc import rewards as R
from ttc.checkpoint import LoadedModel
from ttc.decode import SamplingParams, generate_solutions
from ttc.distributed import require_single
from ttc.metrics import roc_auc, within_group_auc
from ttc.models import PolicyConfig, create
from ttc.models.reward import score_logits
from ttc.tasks.base import Task
from ttc.train import TrainConfig, cache_key, make_optimizer, train_step

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelConfig:
    """Monte-Carlo labelling (hashable).

    Attributes:
        problems: training problems to sample from (train split).
        samples_per_problem: policy solutions per problem.
        rollouts: completions per step prefix (``K``).
        hard: label = any rollout correct (else the fraction, "soft").
        seed: sampling seed.
    """

    problems: int = 512
    samples_per_problem: int = 4
    rollouts: int = 4
    hard: bool = False
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class StepDataset:
    """Sequences with per-step labels. ``ends``/``labels``/``mask``/``exact`` are ``[M, K]``;
    ``final`` ``[M]`` is the solution's correctness and ``prompt_len`` ``[M]`` where it starts."""

    tokens: np.ndarray
    prompt_len: np.ndarray
    ends: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    exact: np.ndarray
    final: np.ndarray


def monte_carlo_labels(policy: LoadedModel, task: Task, cfg: LabelConfig, *, split: str = "train",
                       seed_offset: int = 0, skip: int = 0,
                       progress: bool = True) -> StepDataset:
    """Samples solutions and labels every step by policy rollouts (see module docstring).

    ``skip``: leave out the first ``skip`` problems (a fixed-order task's validation labels
    come after its training problems)."""
    probs = task.problems(cfg.problems + skip, seed=20_000 + cfg.seed + seed_offset, split=split)
    if skip:
        probs = probs.take(np.arange(skip, skip + cfg.problems))
    key = jax.random.key(cfg.seed + seed_offset)
    k1, k2 = jax.random.split(key)
    sp = SamplingParams.make(1.0)
    n = cfg.samples_per_problem
    s = generate_solutions(policy.graphdef, policy.params, task, probs.prompts, probs.prompt_len,
                           num_samples=n, sampling=sp, key=k1, progress=progress)
    p, _, t = s.tokens.shape
    tokens = s.tokens.reshape(p * n, t)
    length = s.length.reshape(-1)
    plen = np.repeat(probs.prompt_len, n)
    gold_ans = np.repeat(probs.answers, n)
    gold = np.repeat(probs.gold, n, axis=0)
    final = s.answers.reshape(-1) == gold_ans
    ends, mask = map(np.asarray, R.step_ends(task, tokens, plen, length,
                                             max_steps=task.max_steps + 1))
    exact = R.step_verdicts(task, tokens, plen, ends, mask, gold)
    labels = np.zeros(ends.shape, np.float32)
    # the final scored step of each row gets the row's own outcome
    last = mask.sum(1) - 1
    rows_with_steps = last >= 0
    labels[np.flatnonzero(rows_with_steps), last[rows_with_steps]] = final[rows_with_steps]
    # every earlier step prefix: K rollouts from the prefix
    rr, kk = np.nonzero(mask & (np.arange(ends.shape[1])[None] < last[:, None]))
    if len(rr):
        pre_len = ends[rr, kk] + 1
        prefixes = np.where(np.arange(t)[None] < pre_len[:, None], tokens[rr], 0)
        roll = generate_solutions(policy.graphdef, policy.params, task, prefixes, pre_len,
                                  num_samples=cfg.rollouts, sampling=sp, key=k2,
                                  progress=progress)
        ok = roll.answers == gold_ans[rr][:, None]
        labels[rr, kk] = ok.any(1) if cfg.hard else ok.mean(1)
    return StepDataset(tokens=tokens, prompt_len=plen.astype(np.int32), ends=np.maximum(ends, 0),
                       labels=labels, mask=mask, exact=exact, final=final)


def _logits(model, tokens, prompt_len):
    """Score logits ``[B, T]`` of full sequences (see :func:`ttc.models.reward.score_logits`)."""
    out, _ = model(tokens)
    pos = jnp.arange(tokens.shape[1])[None, :]
    logit, _ = score_logits(model, out, tokens, solution=pos >= prompt_len[:, None],
                            consumed=jnp.full(tokens.shape[:1], tokens.shape[1]))
    return logit


def reward_loss(model, tokens, prompt_len, ends, labels, mask):
    logit = jnp.take_along_axis(_logits(model, tokens, prompt_len), ends, axis=1)
    bce = jnp.maximum(logit, 0) - logit * labels + jnp.log1p(jnp.exp(-jnp.abs(logit)))
    return jnp.sum(bce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def reward_quality(spec: R.RewardSpec, params, task: Task, data: StepDataset,
                   group_size: int | None = None) -> dict:
    """AUC of the final score for correctness (over all solutions, and ``within_auc`` within
    each problem's ``group_size`` consecutive solutions) and step accuracy against the exact
    checker."""
    scores = []

    @jax.jit
    def probs(p, t, pl):
        return jax.nn.sigmoid(_logits(nnx.merge(spec.graphdef, p), t, pl))

    for i in range(0, len(data.tokens), 1024):
        scores.append(np.asarray(probs(params, jnp.asarray(data.tokens[i : i + 1024]),
                                       jnp.asarray(data.prompt_len[i : i + 1024]))))
    prob = np.concatenate(scores)
    step_scores = np.take_along_axis(prob, data.ends, 1)
    last = data.mask.sum(1) - 1
    ok = last >= 0
    final_score = step_scores[np.flatnonzero(ok), last[ok]]
    out = {"final_auc": roc_auc(final_score, data.final[ok])}
    if group_size:
        groups = np.arange(len(data.tokens))[ok] // group_size
        out["within_auc"] = within_group_auc(final_score, data.final[ok], groups)
    if spec.kind == "prm":
        pred = step_scores > 0.5
        out["step_accuracy"] = float(np.mean(pred[data.mask] == data.exact[data.mask]))
        out["step_auc"] = roc_auc(step_scores[data.mask], data.exact[data.mask])
        out["step_label_mae"] = float(np.mean(np.abs(step_scores - data.labels)[data.mask]))
    return out


def init_from_policy(model: LoadedModel, policy: LoadedModel) -> LoadedModel:
    """Copies the policy's parameters into the reward model wherever they exist (embeddings,
    the policy's blocks, final norm); the scalar head and any extra blocks stay freshly
    initialised.

    Reward models are usually fine-tuned from the policy or base LM (Math-Shepherd; Lightman et
    al. 2023): the trunk already computes the step arithmetic. An extra block on top lets the
    model compare a written result with what the trunk computed at the previous position. An
    ``lm_value`` model also takes the LM head (its features are that LM's log-probabilities).
    """
    src = nnx.to_pure_dict(policy.params)
    dst = nnx.to_pure_dict(model.params)

    def copy(x):  # copies: training donates its parameter buffers, the policy keeps its own
        return jax.tree.map(lambda a: jnp.array(a, copy=True), x)

    for k in dst:
        if k not in src or (k == "head" and model.cfg.head == "scalar"):
            continue
        if k == "blocks":
            for i in dst[k]:
                if i in src[k]:
                    dst[k][i] = copy(src[k][i])
            continue
        if jax.tree.map(np.shape, dst[k]) != jax.tree.map(np.shape, src[k]):
            raise ValueError(f"reward model {k!r} does not match the policy's shapes")
        dst[k] = copy(src[k])
    params = model.params
    nnx.replace_by_pure_dict(params, dst)
    return dataclasses.replace(model, params=params)


_HEAD = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("value"), nnx.PathContains("feat_w")))


@functools.partial(jax.jit, static_argnames=("graphdef", "tx"), donate_argnums=(1, 3))
def _head_step(graphdef, trainable, frozen, opt_state, batch, *, tx):
    """One optimiser step of :func:`reward_loss` on ``trainable`` only (the rest is constant)."""
    loss, grads = jax.value_and_grad(
        lambda p: reward_loss(nnx.merge(graphdef, p, frozen), *batch))(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss


def train_reward_model(kind: str, data: StepDataset, val: StepDataset, task: Task,
                       model_cfg: PolicyConfig, cfg: TrainConfig, *,
                       init_from: LoadedModel | None = None, group_size: int | None = None,
                       out_dir: str | Path | None = None, progress: bool = True) -> LoadedModel:
    """Trains a PRM (per-step MC labels) or ORM (final correctness at every step end),
    optionally starting from the policy's trunk (``init_from``).

    The checkpoint kept is the evaluation with the best within-problem AUC on ``val`` (rows in
    groups of ``group_size`` solutions per problem) — what best-of-N and search use — or the
    best plain AUC without groups.

    With ``out_dir`` the model is saved there, and a resume snapshot (trained parameters,
    optimiser state, data-order RNG, history, best evaluation so far) is written atomically to
    ``<out_dir>.resume.npz`` at every evaluation: an interrupted run with the same configuration
    continues from it, to the same result."""
    if kind not in ("prm", "orm"):
        raise ValueError(f"kind must be prm or orm, got {kind!r}")
    module = create(model_cfg, seed=cfg.seed + (1 if kind == "prm" else 2))
    model = LoadedModel.from_module(module)
    frozen_trunk = model_cfg.head == "lm_value"
    if frozen_trunk and init_from is None:
        raise ValueError("an lm_value reward model reads a trained LM's log-probabilities: it "
                         "needs init_from (reward.init_from_policy=true)")
    if init_from is not None:
        model = init_from_policy(model, init_from)
    graphdef, params = model.graphdef, model.params
    spec = R.RewardSpec(kind=kind, graphdef=graphdef, window=task.max_step_len)
    labels = data.labels if kind == "prm" else np.broadcast_to(
        data.final[:, None], data.labels.shape).astype(np.float32)
    tx = make_optimizer(cfg)
    if frozen_trunk:  # only the value head and the feature weights learn
        tgraph, w, frozen = nnx.split(nnx.merge(graphdef, params), _HEAD, nnx.Param)

        def step_fn(w, opt_state, batch):
            return _head_step(tgraph, w, frozen, opt_state, batch, tx=tx)

        def to_params(w):
            return nnx.split(nnx.merge(tgraph, w, frozen), nnx.Param)[1]
    else:
        w = params

        def step_fn(w, opt_state, batch):
            return train_step(graphdef, w, opt_state, batch, tx=tx, loss_fn=reward_loss)

        def to_params(w):
            return w
    opt_state = tx.init(w)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    history, quality, step, best, start = [], {}, 0, None, 1
    resume = checkpoint.ResumePoint.at(out_dir, {"kind": kind, "train": dataclasses.asdict(cfg),
                                                 "model": dataclasses.asdict(model_cfg)})
    resumed = resume.load({"w": w, "opt_state": opt_state, "best": params}, rng)
    if resumed is not None:
        trees, rmeta = resumed
        w, opt_state = trees["w"], trees["opt_state"]
        history, start = rmeta["history"], rmeta["step"] + 1
        best = (rmeta["best_auc"], rmeta["best_step"], trees["best"], rmeta["best_quality"])
        log.info("resuming %s training from %s at step %d", kind, resume.path, start)
    bar = tqdm(range(start, cfg.steps + 1), desc=f"train {kind}", disable=not progress,
               initial=start - 1, total=cfg.steps)
    step = start - 1
    for step in bar:
        i = rng.integers(0, len(data.tokens), cfg.batch_size)
        batch = tuple(jnp.asarray(a[i]) for a in (data.tokens, data.prompt_len, data.ends,
                                                   labels, data.mask))
        w, opt_state, loss = step_fn(w, opt_state, batch)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            params = to_params(w)
            quality = reward_quality(spec, params, task, val, group_size)
            history.append({"step": step, "loss": float(loss), **quality,
                            "time_s": round(time.time() - t0, 1)})
            bar.set_postfix(loss=f"{float(loss):.3f}", auc=f"{quality['final_auc']:.3f}")
            log.info("%s step %d loss %.4f %s", kind, step, float(loss), quality)
            auc = quality.get("within_auc", quality["final_auc"])
            if best is None or (np.isfinite(auc) and not auc <= best[0]):
                # keep a copy: the next step donates (deletes) these buffers
                best = (auc, step, jax.tree.map(lambda x: jnp.array(x, copy=True), params),
                        quality)
            if step < cfg.steps:
                resume.save({"w": w, "opt_state": opt_state, "best": best[2]}, rng, step=step,
                            history=history, best_auc=best[0], best_step=best[1],
                            best_quality=best[3])
    _, best_step, params, quality = best
    meta = {"kind": kind, "train": {**dataclasses.asdict(cfg), "steps_run": step,
                                    "selected_step": best_step,
                                    "time_s": round(time.time() - t0, 1), "history": history},
            "quality": quality}
    model = LoadedModel(cfg=model_cfg, graphdef=graphdef, params=params, meta=meta)
    if out_dir is not None:
        checkpoint.save(out_dir, model)
        resume.clear()
    return model


def get_reward_model(kind: str, policy: LoadedModel, task: Task, model_cfg: PolicyConfig,
                     label_cfg: LabelConfig, cfg: TrainConfig, *, cache_dir: str | Path,
                     init_from_policy: bool = True, base: LoadedModel | None = None,
                     progress: bool = True) -> LoadedModel:
    """Loads the cached PRM/ORM for (policy, task, configs) or labels data and trains one.

    Labels always come from ``policy`` (the model whose solutions are verified). With
    ``init_from_policy`` the reward model starts from ``base``'s weights (default: the policy
    itself; a larger model trained on the same data gives a stronger verifier trunk, and
    ``model_cfg`` must then match ``base``'s architecture)."""
    trunk = policy if base is None else base
    # "select" names the checkpoint-selection rule, so a model kept by an older rule is retrained
    extra = {"select": "within_auc"} if base is None else {"select": "within_auc",
                                                           "base": base.meta.get("id")}
    key = cache_key(policy.meta.get("id"), task, model_cfg, label_cfg, cfg, extra)
    base_dir = Path(cache_dir)
    path = base_dir / (f"{kind}-{key}"
                   f"{'-init' if init_from_policy else ''}")
    m = checkpoint.load_cached(path)
    if m is not None:
        log.info("reusing cached %s %s", kind, path)
    else:
        require_single(f"the {kind.upper()}", path)
        data_path = base_dir / f"mc-labels-{cache_key(policy.meta.get('id'), task, label_cfg)}.npz"
        data, val = _labels(policy, task, label_cfg, data_path, progress)
        m = train_reward_model(kind, data, val, task, model_cfg, cfg, progress=progress,
                               init_from=trunk if init_from_policy else None,
                               group_size=label_cfg.samples_per_problem, out_dir=path)
    m.meta["id"] = path.name
    return m


_VAL_OFFSET = 777  # seed offset of the validation labels


def val_problems(cfg: LabelConfig) -> int:
    """Problems of the validation labels (checkpoint selection) beside ``cfg.problems``."""
    return max(64, cfg.problems // 4)


def _labels(policy, task, label_cfg, path: Path, progress: bool):
    fields = [f.name for f in dataclasses.fields(StepDataset)]
    if path.exists():
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        if "train_prompt_len" not in d:  # written before prompt_len was stored: re-derive it
            val_cfg = dataclasses.replace(label_cfg, problems=val_problems(label_cfg))
            for split, c, off in (("train", label_cfg, 0), ("val", val_cfg, _VAL_OFFSET)):
                probs = task.problems(c.problems, seed=20_000 + c.seed + off, split="train")
                d[f"{split}_prompt_len"] = np.repeat(probs.prompt_len, c.samples_per_problem)
        return (StepDataset(**{f: d["train_" + f] for f in fields}),
                StepDataset(**{f: d["val_" + f] for f in fields}))
    t0 = time.time()
    data = monte_carlo_labels(policy, task, label_cfg, progress=progress)
    val_cfg = dataclasses.replace(label_cfg, problems=val_problems(label_cfg))
    # a fixed benchmark's problems do not depend on the seed: validate on the next ones
    skip = label_cfg.problems if getattr(task, "fixed_order", False) else 0
    val = monte_carlo_labels(policy, task, val_cfg, seed_offset=_VAL_OFFSET, skip=skip,
                             progress=progress)
    log.info("Monte-Carlo step labels: %d solutions in %.0fs", len(data.tokens), time.time() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.npz")
    np.savez_compressed(tmp, **{f"train_{f}": getattr(data, f) for f in fields},
                        **{f"val_{f}": getattr(val, f) for f in fields})
    tmp.replace(path)
    return data, val
