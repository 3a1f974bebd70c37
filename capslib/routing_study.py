"""``python -m capslib.routing_study``: the command line of :mod:`capslib.experiments.routing_study`."""

from .experiments.routing_study import main

if __name__ == "__main__":
    main()
