"""Train (or reuse) the models the main job needs — policy, and the PRM/ORM its methods use —
without evaluating.

    ttc-train                          # default policy + PRM + ORM, cached under checkpoints/
    ttc-train policy=small             # another size
    ttc-train method=majority          # only the policy (no method needs a reward model)
    ttc-train +save_to=my_policy       # also copy the policy checkpoint to a chosen directory
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from ttc import checkpoint
from ttc.cli.common import friendly_errors, hydra_entry, policy_config, setup_devices
from ttc.cli.schema import validate

log = logging.getLogger("ttc.train")


@friendly_errors
def run(cfg: DictConfig) -> None:
    """Trains (or loads cached) the policy and the reward models its methods need, after
    validating ``cfg`` (:func:`ttc.cli.schema.validate`)."""
    from ttc.cli.run import reward_settings, reward_sources, train_models

    rc = validate(cfg, command="train")
    setup_devices(cfg)
    task = rc.build_task()
    methods, rsettings = list(rc.methods), reward_settings(rc)
    policy, trunk = train_models(cfg, task, methods, policy_config(cfg, task),
                                 rc.train.config(), rsettings)
    tr = policy.meta.get("train", {})
    print(f"policy {policy.meta.get('id')}: {policy.cfg.n_params} parameters, "
          f"{tr.get('steps_run')} steps, validation single-sample accuracy "
          f"{tr.get('val_accuracy', float('nan')):.3f}")
    reward_sources(cfg, methods, task, policy, rsettings, trunk)
    if cfg.get("save_to"):
        dst = checkpoint.save(cfg.save_to, policy)
        print(f"saved a copy to {dst}")


main = hydra_entry(run, "train")


if __name__ == "__main__":
    main()
