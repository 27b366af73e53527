"""Build shim: ships the top-level ``conf/`` inside the wheel as package data ``ttc/conf``, so
the console scripts find their Hydra configs from any working directory after ``pip install .``.

Metadata, dependencies and entry points are in ``setup.cfg``.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ttc", "ttc.*"]), "ttc.conf"],
    package_dir={"ttc.conf": "conf"},
    package_data={"ttc.conf": ["*.yaml", "*/*.yaml", "*/*/*.yaml"]},
)
