"""Plots by subject: pure plotting functions (``plot_x(..., ax=None)``); sliders over them live in ``widgets``."""

# One namespace for the notebooks (``from capslib import plots; plots.plot_digit(...)``); the
# widgets stay out so that importing the plots never loads ipywidgets.
from . import (
    algorithms,
    architecture,
    capsules,
    coupling,
    dimensions,
    equations,
    equivariance,
    explaining,
    images,
    inverse_graphics,
    multimnist,
    results,
    robustness,
    routing,
    scrubbers,
    studies,
)
from .algorithms import *  # noqa: F403
from .architecture import *  # noqa: F403
from .capsules import *  # noqa: F403
from .coupling import *  # noqa: F403
from .dimensions import *  # noqa: F403
from .equations import *  # noqa: F403
from .equivariance import *  # noqa: F403
from .explaining import *  # noqa: F403
from .images import *  # noqa: F403
from .inverse_graphics import *  # noqa: F403
from .multimnist import *  # noqa: F403
from .results import *  # noqa: F403
from .robustness import *  # noqa: F403
from .routing import *  # noqa: F403
from .scrubbers import *  # noqa: F403
from .studies import *  # noqa: F403

__all__ = [
    name
    for module in (
        images, capsules, equations, routing, coupling, dimensions, equivariance, results, robustness, multimnist,
        architecture, inverse_graphics, explaining, scrubbers, algorithms, studies,
    )
    for name in module.__all__
]  # fmt: skip
