"""``scripts/pairwise_orm.py``: its pairwise loss against a loop over the pairs, and the score
position it reads."""

from __future__ import annotations

import numpy as np

from ttc.testing import load_script
from ttc.train_reward import StepDataset


def _load():
    return load_script("pairwise_orm")


def test_pairwise_loss_is_the_mean_over_right_wrong_pairs():
    mod = _load()
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 4)).astype(np.float32)
    right = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]],
                     np.float32)
    terms = [np.log1p(np.exp(-(scores[g, i] - scores[g, j])))
             for g in range(5) for i in range(4) for j in range(4)
             if right[g, i] == 1 and right[g, j] == 0]
    assert len(terms) == 4 + 3 + 4  # the all-right and all-wrong groups have no pair
    np.testing.assert_allclose(float(mod.pairwise_loss(scores, right)), np.mean(terms),
                               rtol=1e-5)


def test_final_ends_read_each_rows_last_scored_step():
    mod = _load()
    ends = np.array([[3, 5, 7], [4, 0, 0], [2, 6, 0]])
    mask = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]], bool)
    z = np.zeros((3, 3))
    data = StepDataset(tokens=z, prompt_len=z[:, 0], ends=ends, labels=z, mask=mask, exact=mask,
                       final=z[:, 0])
    np.testing.assert_array_equal(mod.final_ends(data), [7, 4, 6])
