"""``python -m experiments.train`` in a source checkout: the same as ``ttc-train``.

The entry point is :func:`ttc.cli.train.main`.
"""

from ttc.cli.train import main

if __name__ == "__main__":
    main()
