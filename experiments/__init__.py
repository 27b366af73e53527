"""Thin scripts for a source checkout: ``python -m experiments.run`` is ``ttc-run``.

The entry points themselves live in :mod:`ttc.cli` (installed with the wheel); this folder is
not part of the installed package.
"""
