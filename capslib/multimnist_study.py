"""``python -m capslib.multimnist_study``: the command line of :mod:`capslib.experiments.multimnist_study`."""

from .experiments.multimnist_study import main

if __name__ == "__main__":
    main()
