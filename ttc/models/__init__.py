"""Flax NNX models behind one policy interface (:mod:`ttc.models.interface`), by family.

Families: ``transformer`` (:mod:`ttc.models.transformer`, the synthetic GPT-style decoder).
Build any registered family's module with :func:`create`.
"""

from ttc.models.interface import HEADS, Cache, LayerCache, Policy, PolicyConfig
from ttc.models.llama import Llama, LlamaConfig
from ttc.models.registry import (
    DEFAULT_FAMILY,
    check_model_split,
    config_from_dict,
    config_to_dict,
    create,
    families,
    family_of,
    param_specs,
    partition_rules,
    register,
)
from ttc.models.transformer import Transformer, TransformerConfig, init_cache

register("transformer", TransformerConfig, Transformer)
register("llama", LlamaConfig, Llama)

__all__ = [
    "DEFAULT_FAMILY",
    "HEADS",
    "Cache",
    "LayerCache",
    "Llama",
    "LlamaConfig",
    "Policy",
    "PolicyConfig",
    "Transformer",
    "TransformerConfig",
    "check_model_split",
    "config_from_dict",
    "config_to_dict",
    "create",
    "families",
    "family_of",
    "init_cache",
    "param_specs",
    "partition_rules",
    "register",
]
