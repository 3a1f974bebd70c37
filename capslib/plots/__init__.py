"""Plots: pure plotting functions (``plot_x(..., ax=None)``), and sliders over them (``widgets``)."""

from .architecture import *  # noqa: F403
from .evidence import *  # noqa: F403
from .figures import *  # noqa: F403
from .multimnist import *  # noqa: F403
from .trained import *  # noqa: F403
from .why import *  # noqa: F403
