"""An outcome verifier trained to rank the solutions of one problem: a within-problem pairwise
loss instead of the Monte-Carlo recipe's binary cross-entropy (``ttc.train_reward``).

Binary cross-entropy on outcome labels can be lowered by predicting which problems are hard,
without telling a problem's right solutions from its wrong ones; best-of-N needs only the
latter. Here each batch holds whole groups (the ``samples_per_problem`` solutions of a problem,
consecutive rows of the labels file), and the loss is the logistic loss of every (right, wrong)
pair's score difference (RankNet; Burges et al. 2005), over groups with both kinds. The model
is the verifier's LM with a scalar head, fine-tuned whole (as ``reward.head=scalar``). Reported:
the validation rows' within-problem AUC (and across-problem AUC) every ``--eval-every`` steps.

    ttc-train task=sudoku 'methods=[{name:bon,label:bon_orm,reward:orm}]' \\
        reward.labels.problems=4096 reward.train.steps=1000     # labels + the verifier's LM
    python scripts/pairwise_orm.py --task sudoku \\
        --labels checkpoints/mc-labels-<hash>.npz --trunk checkpoints/policy-<hash>

``--labels``: the Monte-Carlo labels file that run wrote (``checkpoints/mc-labels-*.npz``, the
newest); ``--trunk``: the verifier LM it printed ("verifier trunk policy-...").
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ttc import checkpoint
from ttc import rewards as R
from ttc.checkpoint import LoadedModel
from ttc.models import create
from ttc.tasks import make_task
from ttc.train_reward import StepDataset, _logits, init_from_policy, reward_quality


def final_ends(data: StepDataset) -> np.ndarray:
    """``[M]`` each row's last scored step end (where an ORM's score is read)."""
    last = np.maximum(data.mask.sum(1) - 1, 0)
    return np.take_along_axis(data.ends, last[:, None], 1)[:, 0]


def pairwise_loss(scores, right):
    """Mean logistic loss of ``score(right) - score(wrong)`` over every such pair of a group.

    Args:
        scores: ``[G, K]`` score logits of ``G`` groups of ``K`` solutions.
        right: ``[G, K]`` 1.0 where the solution is correct.
    """
    diff = scores[:, :, None] - scores[:, None, :]
    pair = right[:, :, None] * (1.0 - right[:, None, :])
    return jnp.sum(jax.nn.softplus(-diff) * pair) / jnp.maximum(jnp.sum(pair), 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sudoku", help="task name (default settings)")
    ap.add_argument("--labels", required=True, help="checkpoints/mc-labels-*.npz")
    ap.add_argument("--trunk", required=True, help="the verifier LM's checkpoint directory")
    ap.add_argument("--group", type=int, default=4, help="solutions per problem (default 4)")
    ap.add_argument("--groups-per-batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=250)
    args = ap.parse_args()
    task = make_task(args.task)
    with np.load(args.labels) as z:
        fields = [f.name for f in dataclasses.fields(StepDataset)]
        data = StepDataset(**{f: z["train_" + f] for f in fields})
        val = StepDataset(**{f: z["val_" + f] for f in fields})
    trunk = checkpoint.load(args.trunk)
    cfg = dataclasses.replace(trunk.cfg, head="scalar")
    model = init_from_policy(LoadedModel.from_module(create(cfg, seed=2)), trunk)
    graphdef, params = model.graphdef, model.params
    spec = R.RewardSpec(kind="orm", graphdef=graphdef, window=task.max_step_len)
    k = args.group
    end, right = final_ends(data), data.final.astype(np.float32)
    per_group = right[: len(right) // k * k].reshape(-1, k).sum(1)
    mixed = np.flatnonzero((per_group > 0) & (per_group < k))
    print(f"{len(data.tokens)} training solutions, {len(mixed)} of {len(per_group)} problems "
          f"with right and wrong ones; {len(val.tokens)} validation solutions", flush=True)

    def loss_fn(p, tokens, plen, ends, ok):
        logits = _logits(nnx.merge(graphdef, p), tokens, plen)
        score = jnp.take_along_axis(logits, ends[:, None], 1)[:, 0]
        return pairwise_loss(score.reshape(-1, k), ok.reshape(-1, k))

    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, args.lr, 50, args.steps),
                     weight_decay=0.01)
    opt = tx.init(params)

    @jax.jit
    def step(p, opt, *batch):
        loss, grads = jax.value_and_grad(loss_fn)(p, *batch)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    rng, t0 = np.random.default_rng(0), time.time()
    for i in range(1, args.steps + 1):
        rows = (rng.choice(mixed, args.groups_per_batch)[:, None] * k + np.arange(k)).ravel()
        batch = (jnp.asarray(a[rows]) for a in (data.tokens, data.prompt_len, end, right))
        params, opt, loss = step(params, opt, *batch)
        if i % args.eval_every == 0 or i == args.steps:
            q = reward_quality(spec, params, task, val, k)
            print(f"step {i}: loss {float(loss):.3f}, within-problem AUC "
                  f"{q['within_auc']:.3f}, AUC {q['final_auc']:.3f} ({time.time() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
