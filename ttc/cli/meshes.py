"""``policy.mesh`` / ``reward.mesh``: the main job's device meshes, checked before anything
trains or compiles, and the models placed on them (:mod:`ttc.parallel`)."""

from __future__ import annotations

import dataclasses

import jax

from ttc.checkpoint import LoadedModel
from ttc.cli.schema import MeshSection, RunConfig
from ttc.errors import ConfigError
from ttc.evaluate import RewardSource
from ttc.models import PolicyConfig, check_model_split, partition_rules
from ttc.parallel import Layout, place


@dataclasses.dataclass(frozen=True, kw_only=True)
class Meshes:
    """The layouts of the policy and of the reward models (``None``: the samplers' default,
    every local device on ``data``), ready for :func:`ttc.parallel.use_layouts`."""

    policy: Layout | None = None
    reward: Layout | None = None

    def place_policy(self, model: LoadedModel) -> LoadedModel:
        """``model`` on the policy's mesh (split over ``model`` by its family's rules)."""
        return model if self.policy is None else model.on_mesh(self.policy)

    def place_rewards(self, rewards: dict[str, RewardSource]) -> dict[str, RewardSource]:
        """The learned reward sources with their parameters on the reward mesh (text scorers
        of ``reward=hf`` are left as they are)."""
        if self.reward is None:
            return rewards
        lay = self.reward
        return {k: src if src.params is None else dataclasses.replace(
            src, params=place(src.params, lay, partition_rules(src.cfg, lay.model)))
            for k, src in rewards.items()}


def _layout(section: MeshSection, key: str, devices: int) -> Layout | None:
    return None if section.default else section.layout(devices, key)


def mesh_layouts(rc: RunConfig) -> Meshes:
    """The validated configuration's meshes on this process's local devices.

    Raises:
        ConfigError: a mesh needs more devices than this process has.
    """
    devices = jax.local_device_count()
    reward = getattr(rc.reward, "mesh", None)
    return Meshes(policy=_layout(rc.policy.mesh, "policy.mesh", devices),
                  reward=None if reward is None else _layout(reward, "reward.mesh", devices))


def check_split(layout: Layout | None, cfg: PolicyConfig, key: str) -> None:
    """Checks that ``layout``'s ``model`` axis divides ``cfg``'s heads and MLP width.

    Raises:
        ConfigError: naming ``key`` and the sizes.
    """
    if layout is None:
        return
    try:
        check_model_split(cfg, layout.model)
    except ValueError as e:
        raise ConfigError(f"{key}.model={layout.model}: {e}") from None
