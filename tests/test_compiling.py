"""capslib.training.compiling: opt-in torch.compile, one warning and eager mode when it cannot compile."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed

import capslib
from capslib.training.compiling import compiled_or_eager


def _counting_compile(monkeypatch, behaviour):
    """Replace torch.compile by ``behaviour(model, *args, **kwargs)``; return the list of its calls."""
    calls = []

    def fake_compile(model, **options):
        def run(*args, **kwargs):
            calls.append(1)
            return behaviour(model, *args, **kwargs)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def compile_failure(message: str) -> Exception:
    """What torch.compile's first call raises when its backend cannot build (Inductor without a C++ compiler)."""
    return BackendCompilerFailed(lambda *args: None, RuntimeError(message), None)


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(model, *args, **kwargs):
        raise compile_failure("no C++ compiler found")

    calls = _counting_compile(monkeypatch, broken)
    torch.manual_seed(0)
    model = capslib.CapsNet().eval()
    x = torch.rand(2, 1, 28, 28)
    step = compiled_or_eager(model)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        out = step(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        again = step(x)
    assert len(calls) == 1  # the compiled version is not tried again
    torch.testing.assert_close(again.lengths, out.lengths)
    torch.testing.assert_close(out.lengths, model(x).lengths)
    assert step.model is model


def test_compile_passes_the_models_own_value_errors_through(monkeypatch):
    calls = _counting_compile(monkeypatch, lambda model, *a, **k: model(*a, **k))
    step = compiled_or_eager(capslib.CapsNet())
    with pytest.raises(ValueError, match="pass the true labels"):
        step(torch.rand(2, 1, 28, 28))  # training mode with a decoder and no labels
    step(torch.rand(2, 1, 28, 28), torch.tensor([1, 2]))
    assert len(calls) == 2  # still compiled after the user's error


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("mat1 and mat2 shapes cannot be multiplied"),  # a bug in the model, at run time
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        BackendCompilerFailed(lambda *args: None, torch.OutOfMemoryError("out of memory while autotuning"), None),
    ],
    ids=["runtime-bug", "out-of-memory", "out-of-memory-while-compiling"],
)
def test_only_a_compile_failure_falls_back(monkeypatch, error):
    """An error of the model or of memory is raised as it is, with no warning, and the next call
    still runs compiled: the fallback is for a compiler that cannot work, never a way to hide a bug."""

    def failing(model, *args, **kwargs):
        raise error

    calls = _counting_compile(monkeypatch, failing)
    step = compiled_or_eager(capslib.CapsNet().eval())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(type(error)) as raised:
            step(torch.rand(2, 1, 28, 28))
        assert raised.value is error
        with pytest.raises(type(error)):
            step(torch.rand(2, 1, 28, 28))
    assert len(calls) == 2  # not switched to eager


def test_compiled_model_still_rejects_bad_labels(monkeypatch):
    """Inside a compiled graph the label-range check is skipped; the wrapper runs it eagerly."""
    tracing = [False]

    def traced(model, *args, **kwargs):  # the model as dynamo traces it: is_compiling() is True inside
        tracing[0] = True
        try:
            return model(*args, **kwargs)
        finally:
            tracing[0] = False

    _counting_compile(monkeypatch, traced)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: tracing[0])
    step = compiled_or_eager(capslib.CapsNet())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got values from 0 to 10"):
        step(torch.rand(2, 1, 28, 28), torch.tensor([0, 10]))


def test_compile_disabled_returns_the_model():
    model = capslib.CapsNet()
    assert compiled_or_eager(model, enabled=False) is model


@pytest.mark.slow
def test_compiled_training_forward_is_one_graph():
    """No graph breaks: while compiling, "auto" routing is the reference and value checks are skipped."""
    import torch._dynamo as dynamo

    model = capslib.CapsNet().train()
    explained = dynamo.explain(model)(torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]))
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]


@pytest.mark.slow
def test_compiled_model_matches_eager():
    """Real torch.compile (needs a C++ compiler on CPU; about a minute)."""
    torch.manual_seed(0)
    model = capslib.CapsNet().eval()
    x = torch.rand(4, 1, 28, 28)
    step = compiled_or_eager(model)
    with torch.no_grad():
        compiled = step(x).lengths
        eager = model(x).lengths
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
