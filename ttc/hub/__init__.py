"""Pretrained checkpoints to and from ttc's models.

:mod:`ttc.hub.hf` reads and writes Hugging Face directories (``config.json`` + safetensors);
:mod:`ttc.hub.gguf` reads llama.cpp GGUF files as HF checkpoints; :mod:`ttc.hub.names` maps ttc
parameter paths to HF tensor names, per family; :func:`load` gives a :class:`HubModel` (policy +
tokenizer) from either kind of checkpoint and :func:`save` writes one back as an HF directory;
:func:`load_reward` (:mod:`ttc.hub.reward`) loads an HF reward model (Math-Shepherd, RLHFlow,
Qwen2.5-Math-PRM, sequence-classifier ORMs) as a :class:`HubReward` that scores text.
"""

from ttc.hub.hf import config_from_hf, config_to_hf, load_hf, load_hf_tensors, save_hf
from ttc.hub.model import HubModel, load
from ttc.hub.reward import HubReward, load_reward


def save(model, directory):
    """Writes ``model`` (a :class:`HubModel`, a :class:`ttc.checkpoint.LoadedModel` or an NNX
    module of the ``llama`` or ``transformer`` family) as a Hugging Face checkpoint that
    ``transformers`` loads to the same logits, with the tokenizer when it has one; returns the
    directory."""
    from flax import nnx

    tokenizer = getattr(model, "tokenizer", None)
    policy = getattr(model, "policy", model)
    if hasattr(policy, "graphdef"):
        policy = nnx.merge(policy.graphdef, policy.params)
    out = save_hf(policy, directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


__all__ = ["HubModel", "HubReward", "config_from_hf", "config_to_hf", "load", "load_hf",
           "load_hf_tensors", "load_reward", "save", "save_hf"]
