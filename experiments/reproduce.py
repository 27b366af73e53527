"""``python -m experiments.reproduce`` in a source checkout: the same as ``ttc-reproduce``.

The entry point is :func:`ttc.cli.reproduce.main`.
"""

from ttc.cli.reproduce import main

if __name__ == "__main__":
    main()
