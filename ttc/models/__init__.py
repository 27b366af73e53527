"""Flax NNX models: the decoder policy and the reward-model trunk."""

from ttc.models.transformer import Cache, Transformer, TransformerConfig, create, init_cache

__all__ = ["Cache", "Transformer", "TransformerConfig", "create", "init_cache"]
