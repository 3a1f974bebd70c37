"""``python -m capslib.robustness``: the command line of :mod:`capslib.evaluation.robustness`."""

from .evaluation.robustness import main

if __name__ == "__main__":
    main()
