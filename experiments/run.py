"""``python -m experiments.run`` in a source checkout: the same as ``ttc-run``.

The entry point is :func:`ttc.cli.run.main`.
"""

from ttc.cli.run import main

if __name__ == "__main__":
    main()
