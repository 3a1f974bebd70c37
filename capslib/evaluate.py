"""``python -m capslib.evaluate``: the command line of :mod:`capslib.evaluation.accuracy`."""

from .evaluation.accuracy import main

if __name__ == "__main__":
    main()
