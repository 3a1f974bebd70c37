"""Opt-in ``torch.compile`` that falls back to eager mode cleanly (off by default everywhere).

    step = compiled_or_eager(model)   # call step(x, y) in the training loop; keep model for state dicts

``torch.compile`` needs a working compiler toolchain (a C++ compiler on CPU, Triton on CUDA) and
compiles on the first call, so failures show up there, not at ``torch.compile(...)``. The wrapper
catches them once, warns, and runs the plain model from then on. The wrapped model's parameters
are shared, so optimizers and ``model.state_dict()`` (keys unchanged) keep working.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["compiled_or_eager", "CompiledOrEager"]


class CompiledOrEager:
    """Callable running ``torch.compile(model)``, or ``model`` itself after a compile failure.

    Attributes:
        model: the eager module (use it for ``state_dict``, ``eval()``, hooks).
        compiled: True while the compiled version is in use.
    """

    def __init__(self, model: nn.Module, **compile_options) -> None:
        self.model = model
        self.compiled = True
        try:
            self._compiled = torch.compile(model, **compile_options)
        except Exception as err:  # torch.compile itself refused (unsupported Python, platform)
            self._fall_back(err)

    def _fall_back(self, err: Exception) -> None:
        self.compiled = False
        warnings.warn(
            f"torch.compile is not usable here ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "running the model eagerly instead",
            RuntimeWarning,
            stacklevel=3,
        )

    def __call__(self, *args, **kwargs):
        if self.compiled:
            # Checks that read tensor values (CapsNet's label range) are skipped inside the compiled
            # graph; a model that has them exposes check_inputs, run here eagerly.
            check_inputs = getattr(self.model, "check_inputs", None)
            if check_inputs is not None:
                check_inputs(*args, **kwargs)
            try:
                return self._compiled(*args, **kwargs)
            except Exception as err:  # the first call compiles: a missing toolchain fails here
                # A ValueError from the model's own input checks is the user's error, not the compiler's.
                if isinstance(err, ValueError):
                    raise
                self._fall_back(err)
        return self.model(*args, **kwargs)


def compiled_or_eager(model: nn.Module, enabled: bool = True, **compile_options):
    """``CompiledOrEager(model)`` when ``enabled``, else ``model`` unchanged."""
    return CompiledOrEager(model, **compile_options) if enabled else model
