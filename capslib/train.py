"""``python -m capslib.train``: the command line of :mod:`capslib.training.loop`."""

from .training.loop import main

if __name__ == "__main__":
    main()
