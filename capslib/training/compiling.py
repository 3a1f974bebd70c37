"""Opt-in ``torch.compile`` with an eager fallback (off by default everywhere).

    step_model = compiled_or_eager(model)   # call step_model(x, y) in the loop; keep model for state dicts

``torch.compile`` compiles on the first call and needs a toolchain (a C++ compiler on CPU, Triton
on CUDA), so a missing one fails there, not at ``torch.compile(...)``. The wrapper catches that
failure of the compiler once, warns, and runs ``model`` eagerly from then on. Anything else the
call raises (an out-of-memory error, a bug in the model, the model's own ``ValueError``) is the
caller's to see and passes through. Parameters are shared, so optimizers and ``model.state_dict()``
(keys unchanged) keep working.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["compiled_or_eager", "COMPILE_FAILURES"]


def _compile_failures() -> tuple[type[BaseException], ...]:
    """What torch raises when it cannot compile: the backend failed (Inductor's errors, a missing
    C++ compiler or Triton, all wrapped in ``BackendCompilerFailed``) or the generated code did not build."""
    failures: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import BackendCompilerFailed

        failures.append(BackendCompilerFailed)
    except ImportError:  # a torch without dynamo: nothing compiles, nothing to catch
        pass
    try:
        from torch._inductor.exc import CppCompileError

        failures.append(CppCompileError)  # CUDACompileError is one too
    except ImportError:
        pass
    return tuple(failures)


COMPILE_FAILURES = _compile_failures()


def is_compile_failure(err: BaseException) -> bool:
    """Whether ``err`` says the compiler failed (and not that memory ran out while it worked)."""
    inner = getattr(err, "inner_exception", None)
    return isinstance(err, COMPILE_FAILURES) and not isinstance(inner, torch.OutOfMemoryError)


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
            except Exception as err:
                if not is_compile_failure(err):
                    raise
                cause = getattr(err, "inner_exception", None) or err
                message = str(cause).splitlines()[0][:200] if str(cause) else ""
                warnings.warn(
                    f"torch.compile is not usable here ({type(cause).__name__}: {message}); running the model eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                compiled = None
        return model(*args, **kwargs)

    run.model = model  # the eager module, for state dicts, eval() and hooks
    return run
