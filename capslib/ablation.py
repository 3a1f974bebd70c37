"""``python -m capslib.ablation``: the command line of :mod:`capslib.experiments.ablation`."""

from .experiments.ablation import main

if __name__ == "__main__":
    main()
