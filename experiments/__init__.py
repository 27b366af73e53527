"""Hydra entry points (the library in ``ttc/`` has no Hydra inside)."""
