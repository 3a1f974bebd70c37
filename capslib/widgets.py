"""Sliders over pure plotting functions, with callback errors that cannot pass silently.

ipywidgets catches an exception raised inside an ``interact``/``interactive_output`` callback and
prints it into the widget's output area, where a headless notebook run never sees it. Every
callback made here records its exception in :data:`CALLBACK_ERRORS` (and still shows it), and
every control is registered, so a test can move each one (:func:`exercise_widgets`) and fail on
any error.

Usage in a notebook (the plotting function is called once statically first, so the figure also
renders on GitHub and in CI)::

    plot_routing(model, image, iterations=3)                        # static
    interactive_plot(plot_routing, model=fixed(model), image=fixed(image),
                     iterations=IntSlider(3, min=1, max=10))         # live
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

__all__ = ["CALLBACK_ERRORS", "interactive_plot", "exercise_widgets", "registered_controls", "fixed"]

CALLBACK_ERRORS: list[tuple[str, str]] = []
"""``(plot name, formatted traceback)`` of every exception raised inside a widget callback."""

_REGISTRY: list[tuple[str, dict]] = []


class fixed:  # noqa: N801 - mirrors ipywidgets.fixed
    """A constant argument of the plotting function (not a control)."""

    def __init__(self, value) -> None:
        self.value = value


def interactive_plot(plot_fn: Callable, name: str | None = None, **arguments):
    """Show ``plot_fn``'s figure under its controls and redraw it when one moves.

    Args:
        plot_fn: a pure plotting function drawing one matplotlib figure from its keyword arguments.
        name: a label for error reports (default: the function's name).
        arguments: ipywidgets controls (``IntSlider(...)``, ``Dropdown(...)``, ...) or
            :class:`fixed` constants, by ``plot_fn``'s keyword names.

    Returns:
        An ``ipywidgets.VBox`` of the controls and the output area (display it, or make it the
        cell's last expression).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    name = name or getattr(plot_fn, "__name__", "plot")
    constants = {k: v.value for k, v in arguments.items() if isinstance(v, fixed)}
    controls = {k: v for k, v in arguments.items() if not isinstance(v, fixed)}
    for key, control in controls.items():
        if not isinstance(control, widgets.ValueWidget):
            raise ValueError(f"argument {key!r} of {name} must be an ipywidgets control or fixed(...), got {control!r}")
        if not getattr(control, "description", ""):
            control.description = key

    def callback(**values):
        try:
            plot_fn(**constants, **values)
            plt.show()
        except Exception:
            CALLBACK_ERRORS.append((name, traceback.format_exc()))
            raise

    output = widgets.interactive_output(callback, controls)
    _REGISTRY.append((name, controls))
    return widgets.VBox([widgets.HBox(list(controls.values())), output])


def registered_controls() -> list[tuple[str, dict]]:
    """``(plot name, {argument: control})`` of every :func:`interactive_plot` made in this kernel."""
    return list(_REGISTRY)


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
