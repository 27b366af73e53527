"""Hydra entry points: ``ttc-run``, ``ttc-train`` and ``ttc-reproduce``.

This is the only part of :mod:`ttc` that imports Hydra: it turns the composed configuration
(``conf/``, shipped inside the wheel as ``ttc/conf``) into library objects and calls them.
"""
