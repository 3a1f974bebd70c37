"""``python -m capslib.site``: the command line of :mod:`capslib.publish` (:mod:`capslib.publish.cli`)."""

from .publish.cli import main

if __name__ == "__main__":
    main()
