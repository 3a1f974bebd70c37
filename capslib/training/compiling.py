"""Opt-in ``torch.compile`` with an eager fallback (off by default everywhere).

    step_model = compiled_or_eager(model)   # call step_model(x, y) in the loop; keep model for state dicts

``torch.compile`` compiles on the first call and needs a toolchain (a C++ compiler on CPU, Triton
on CUDA), so a missing one fails there, not at ``torch.compile(...)``. The wrapper catches that
once, warns, and runs ``model`` eagerly from then on. Parameters are shared, so optimizers and
``model.state_dict()`` (keys unchanged) keep working.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["compiled_or_eager"]


def compiled_or_eager(model: nn.Module, enabled: bool = True, **compile_options):
    """``model`` itself when not ``enabled``; else a callable that runs ``torch.compile(model)``,
    or ``model`` after the first compile failure (with one ``RuntimeWarning``).

    Checks that read tensor values (CapsNet's label range) are skipped inside a compiled graph,
    so a model's ``check_inputs(x, y)``, if it has one, runs eagerly before each compiled call:
    bad labels still raise ``ValueError``.
    """
    if not enabled:
        return model
    compiled = torch.compile(model, **compile_options)
    check_inputs = getattr(model, "check_inputs", None)

    def run(*args, **kwargs):
        nonlocal compiled
        if compiled is not None:
            if check_inputs is not None:
                check_inputs(*args, **kwargs)
            try:
                return compiled(*args, **kwargs)
            except ValueError:  # the model's own input checks: the caller's error, not the compiler's
                raise
            except Exception as err:
                message = str(err).splitlines()[0][:200] if str(err) else ""
                warnings.warn(
                    f"torch.compile is not usable here ({type(err).__name__}: {message}); running the model eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                compiled = None
        return model(*args, **kwargs)

    run.model = model  # the eager module, for state dicts, eval() and hooks
    return run
