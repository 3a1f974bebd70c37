"""``python -m capslib.train``: the command line of :mod:`capslib.training` (:mod:`capslib.training.cli`)."""

from .training.cli import main

if __name__ == "__main__":
    main()
