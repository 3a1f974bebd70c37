"""Sliders over pure plotting functions, with callback errors that cannot pass silently.

ipywidgets catches an exception raised inside an ``interact``/``interactive_output`` callback and
prints it into the widget's output area, where a headless notebook run never sees it. Every
callback made here records its exception in :data:`CALLBACK_ERRORS` (and still shows it), and
every control is registered, so a test can move each one (:func:`exercise_widgets`) and fail on
any error.

Usage in a notebook (the plotting function is called once statically first, so the figure also
renders on GitHub and in CI); arguments that stay constant are bound with ``functools.partial``
(or a small function of the sliders' values), only the controls are passed by name::

    plot_coupling(model, image, iterations=3)                          # static
    interactive_plot(partial(plot_coupling, model, image),
                     iterations=IntSlider(3, min=1, max=10))            # live
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable

__all__ = ["CALLBACK_ERRORS", "interactive_plot", "exercise_widgets"]

CALLBACK_ERRORS: list[tuple[str, str]] = []
"""``(plot name, formatted traceback)`` of every exception raised inside a widget callback."""

_REGISTRY: list[tuple[str, dict]] = []
"""``(plot name, {argument: control})`` of every :func:`interactive_plot` made in this kernel."""


def interactive_plot(plot_fn: Callable, name: str | None = None, **arguments):
    """Show ``plot_fn``'s figure under its controls and redraw it when one moves.

    Args:
        plot_fn: a pure plotting function drawing one matplotlib figure from its keyword arguments
            (constants already bound, e.g. with ``functools.partial``).
        name: a label for error reports (default: the function's name, through a partial too).
        arguments: ipywidgets controls (``IntSlider(...)``, ``Dropdown(...)``, ...), by
            ``plot_fn``'s keyword names.

    Returns:
        An ``ipywidgets.VBox`` of the controls and the output area (display it, or make it the
        cell's last expression).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    inner = plot_fn.func if isinstance(plot_fn, functools.partial) else plot_fn
    name = name or getattr(inner, "__name__", "plot")
    controls = dict(arguments)
    for key, control in controls.items():
        if not isinstance(control, widgets.ValueWidget):
            raise ValueError(
                f"argument {key!r} of {name} must be an ipywidgets control (bind constants with "
                f"functools.partial), got {control!r}"
            )
        if not getattr(control, "description", ""):
            control.description = key
        style = getattr(control, "style", None)
        if style is not None and hasattr(style, "description_width") and not style.description_width:
            # ipywidgets gives every label the same fixed width and cuts longer ones off
            # ("rotation (deg)" shows as "rotation (..."): let each label be as wide as its text
            style.description_width = "initial"

    def callback(**values):
        try:
            plot_fn(**values)
            plt.show()
        except Exception:
            CALLBACK_ERRORS.append((name, traceback.format_exc()))
            raise

    output = widgets.interactive_output(callback, controls)
    _REGISTRY.append((name, controls))
    return widgets.VBox([widgets.HBox(list(controls.values())), output])


def _other_value(control):
    """A valid value of ``control`` different from its current one (None if it has only one)."""
    options = getattr(control, "options", None)
    if options:
        values = [o[1] if isinstance(o, tuple) else o for o in options]
        others = [v for v in values if v != control.value]
        return others[len(others) // 2] if others else None
    if isinstance(control.value, bool):
        return not control.value
    low, high = getattr(control, "min", None), getattr(control, "max", None)
    if low is not None and high is not None:
        return high if control.value != high else low
    return None


def exercise_widgets() -> int:
    """Move every registered control to another value (one at a time) and back.

    Each move runs the plot's callback synchronously in this kernel.

    Returns:
        How many moves were made.

    Raises:
        RuntimeError: if any callback (now or earlier in this kernel) raised, with the tracebacks.
    """
    moves = 0
    for _, controls in _REGISTRY:
        for control in controls.values():
            new = _other_value(control)
            if new is None:
                continue
            old = control.value
            for value in (new, old):
                try:
                    control.value = value
                except Exception:  # outside a kernel nothing swallows it; it is in CALLBACK_ERRORS
                    pass
                moves += 1
    if CALLBACK_ERRORS:
        report = "\n\n".join(f"[{name}]\n{tb}" for name, tb in CALLBACK_ERRORS)
        raise RuntimeError(f"{len(CALLBACK_ERRORS)} widget callback(s) raised:\n{report}")
    return moves
