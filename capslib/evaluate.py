"""``python -m capslib.evaluate``: the command line of :mod:`capslib.evaluation.cli`."""

from .evaluation.cli import main

if __name__ == "__main__":
    main()
