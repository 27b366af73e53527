"""Supervised fine-tuning of the policy on generated reference solutions (optax + orbax).

The policy is trained with teacher forcing on ``BOS prompt solution EOS``; the loss covers the
solution tokens only. Every ``eval_every`` steps it samples one solution per validation problem
(drawn from the *train* split with another seed, so the test split stays unseen) and stops as
soon as single-sample accuracy reaches ``stop_accuracy``: the default policy is deliberately left
in the regime where test-time compute has room to help.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from ttc import checkpoint
from ttc.checkpoint import LoadedModel
from ttc.decode import SamplingParams, generate_solutions
from ttc.distributed import require_single
from ttc.models import PolicyConfig, create
from ttc.tasks.base import ProblemSet, Task, describe_task
from ttc.tasks.hf_tokenizer import stop_ids_of

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings (hashable).

    Attributes:
        steps: maximum optimiser steps.
        batch_size: sequences per step.
        lr: peak learning rate (linear warm-up, cosine decay to 10%).
        warmup: warm-up steps.
        weight_decay: AdamW weight decay.
        eval_every: steps between validation evaluations (and partial checkpoints).
        eval_problems: validation problems (train split, separate seed).
        stop_accuracy: stop once sampled single-sample validation accuracy reaches this; 1.0
            trains for all ``steps``.
        min_steps: never stop before this many steps.
        seed: initialisation and data seed.
    """

    steps: int = 3000
    batch_size: int = 128
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    eval_every: int = 250
    eval_problems: int = 256
    stop_accuracy: float = 0.5
    min_steps: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in ("steps", "batch_size", "eval_every", "eval_problems"):
            if getattr(self, f) < 1:
                raise ValueError(f"train.{f} must be >= 1, got {getattr(self, f)}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")


def sequences(task: Task, problems: ProblemSet, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forcing sequences ``[P, width]`` and a mask of the positions to predict.

    ``mask[p, t]`` is 1 where ``tokens[p, t + 1]`` is a solution token (the target of position t).
    """
    p = len(problems)
    tokens = np.zeros((p, width), np.int32)
    mask = np.zeros((p, width), np.float32)
    for i in range(p):
        lp = int(problems.prompt_len[i])
        gold = problems.gold[i]
        gl = int(np.argmax(np.isin(gold, stop_ids_of(task.tokenizer)))) + 1
        tokens[i, :lp] = problems.prompts[i, :lp]
        tokens[i, lp : lp + gl] = gold[:gl]
        mask[i, lp - 1 : lp + gl - 1] = 1.0
    return tokens, mask


def lm_loss(model, tokens, mask):
    logits, _ = model(tokens)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    m = mask[:, :-1]
    return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW with global-norm clipping and a warm-up + cosine schedule.

    One object per distinct schedule, reused: the optimiser is a static argument of
    :func:`train_step`, so two trainings of one schedule (other seeds, say) share its
    compilation."""
    return _optimizer(cfg.lr, min(cfg.warmup, cfg.steps // 2), max(cfg.steps, 2),
                      cfg.weight_decay)


@functools.cache
def _optimizer(lr: float, warmup: int, steps: int,
               weight_decay: float) -> optax.GradientTransformation:
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, end_value=lr * 0.1)
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(sched, weight_decay=weight_decay))


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "loss_fn"), donate_argnums=(1, 2))
def train_step(graphdef, params, opt_state, batch, *, tx, loss_fn):
    """One optimiser step of ``loss_fn(model, *batch)`` (params and opt state donated)."""

    def f(p):
        return loss_fn(nnx.merge(graphdef, p), *batch)

    loss, grads = jax.value_and_grad(f)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def evaluate_policy(model: LoadedModel, task: Task, problems: ProblemSet, *, seed: int = 0,
                    temperature: float = 1.0) -> float:
    """Single-sample accuracy at ``temperature`` (1 sample per problem)."""
    s = generate_solutions(
        model.graphdef, model.params, task, problems.prompts, problems.prompt_len,
        num_samples=1, sampling=SamplingParams.make(temperature), key=jax.random.key(seed),
    )
    return float(np.mean(s.answers[:, 0] == problems.answers))


def train_policy(
    task: Task,
    model_cfg: PolicyConfig,
    cfg: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    label: str = "policy",
) -> LoadedModel:
    """Trains a policy by SFT and (optionally) saves it to ``out_dir`` with its config.

    With ``out_dir``, a resume snapshot (parameters, optimiser state, data-order RNG, history) is
    written atomically to ``<out_dir>.resume.npz`` at every evaluation; an interrupted run
    started again with the same configs continues from it exactly (same batches, same result)
    and the snapshot is removed once the checkpoint is saved.

    Returns the trained model; its ``meta['train']`` records steps, loss and validation accuracy.
    """
    width = task.max_prompt_len + task.max_solution_len
    if model_cfg.max_len < width:
        raise ValueError(
            f"policy max_len={model_cfg.max_len} < prompt+solution length {width} for this task"
        )
    module = create(model_cfg, seed=cfg.seed)
    model = LoadedModel.from_module(module)
    graphdef, params = model.graphdef, model.params
    tx = make_optimizer(cfg)
    opt_state = tx.init(params)
    rng = np.random.default_rng(cfg.seed)
    val = task.problems(cfg.eval_problems, seed=10_000 + cfg.seed, split="train")
    history = []
    t0 = time.time()
    acc, loss = float("nan"), float("nan")
    start = 1
    resume = checkpoint.ResumePoint.at(out_dir, dataclasses.asdict(cfg))
    resumed = resume.load({"params": params, "opt_state": opt_state}, rng)
    if resumed is not None:
        trees, rmeta = resumed
        params, opt_state = trees["params"], trees["opt_state"]
        history, start = rmeta["history"], rmeta["step"] + 1
        acc = history[-1]["val_accuracy"] if history else acc
        log.info("resuming %s training from %s at step %d", label, resume.path, start)
    bar = tqdm(range(start, cfg.steps + 1), desc=f"train {label}", disable=not progress,
               initial=start - 1, total=cfg.steps)
    step = start - 1
    for step in bar:
        probs = task.problems(cfg.batch_size, seed=int(rng.integers(2**31)), split="train")
        tokens, mask = sequences(task, probs, width)
        params, opt_state, loss = train_step(
            graphdef, params, opt_state, (jnp.asarray(tokens), jnp.asarray(mask)),
            tx=tx, loss_fn=lm_loss,
        )
        if step % cfg.eval_every == 0 or step == cfg.steps:
            loss = float(loss)
            cur = dataclasses.replace(model, params=params)
            acc = evaluate_policy(cur, task, val, seed=step)
            history.append({"step": step, "loss": loss, "val_accuracy": acc,
                            "time_s": round(time.time() - t0, 1)})
            bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{acc:.3f}")
            log.info("%s step %d loss %.4f val single-sample accuracy %.3f", label, step, loss,
                     acc)
            if acc >= cfg.stop_accuracy and step >= cfg.min_steps:
                break
            resume.save({"params": params, "opt_state": opt_state}, rng, step=step,
                        history=history)
    meta = {
        "task": describe_task(task),
        "train": {**dataclasses.asdict(cfg), "steps_run": step, "val_accuracy": acc,
                  "time_s": round(time.time() - t0, 1), "history": history},
    }
    model = LoadedModel(cfg=model_cfg, graphdef=graphdef, params=params, meta=meta)
    if out_dir is not None:
        checkpoint.save(out_dir, model)
        log.info("saved %s to %s", label, out_dir)
        resume.clear()
    return model


def cache_key(*parts) -> str:
    """A short stable hash of configs (dataclasses/dicts; a task with a ``description()``, such
    as a text task, by that description), naming cached checkpoints."""
    blob = json.dumps([_hashable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _hashable(part):
    if callable(getattr(part, "description", None)):
        return part.description()
    return dataclasses.asdict(part) if dataclasses.is_dataclass(part) else part


def policy_path(task: Task, model_cfg: PolicyConfig, cfg: TrainConfig, *,
                cache_dir: str | Path) -> Path:
    """Where :func:`get_policy` caches the policy of these configs."""
    return Path(cache_dir) / f"policy-{cache_key(task, model_cfg, cfg)}"


def get_policy(
    task: Task,
    model_cfg: PolicyConfig,
    cfg: TrainConfig,
    *,
    cache_dir: str | Path,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    label: str = "policy",
) -> LoadedModel:
    """Loads ``checkpoint_path`` if given, else the cached policy for these configs, else trains
    one and caches it under ``cache_dir/policy-<hash>``. ``meta['id']`` names the checkpoint."""
    if checkpoint_path is not None:
        path = Path(checkpoint_path)
        if not checkpoint.exists(path):
            from ttc.errors import ConfigError

            raise ConfigError(
                f"policy.checkpoint={checkpoint_path!r} is not a ttc checkpoint (expected "
                f"{path}/meta.json and {path}/params/). Train one with `python -m "
                f"experiments.train` or leave policy.checkpoint unset to train the default."
            )
        model = checkpoint.load(path)
        model.meta["id"] = str(path)
        return model
    path = policy_path(task, model_cfg, cfg, cache_dir=cache_dir)
    model = checkpoint.load_cached(path)
    if model is not None:
        log.info("reusing cached %s %s", label, path)
    else:
        require_single(f"the {label}", path)
        log.info("training %s into %s", label, path)
        model = train_policy(task, model_cfg, cfg, out_dir=path, progress=progress, label=label)
    model.meta["id"] = path.name
    return model
