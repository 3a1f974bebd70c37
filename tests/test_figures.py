"""scripts/make_readme_figures.py draws the README's figures, and the claim beside them holds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("make_readme_figures", ROOT / "scripts" / "make_readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["training_curve", "validation_plateau", "reconstructions"])
def test_each_figure_is_drawn(figures, monkeypatch, tmp_path, name, request):
    monkeypatch.setattr(figures, "OUT", tmp_path)
    # MNIST as the session has already read it, rather than a second time inside the script
    arguments = (request.getfixturevalue("mnist_test_tensors"),) if name == "reconstructions" else ()
    path = getattr(figures, name)(*arguments)
    assert path == tmp_path / f"{name}.png" and path.stat().st_size > 10_000


def test_no_later_run_validates_better_than_the_shipped_model():
    """The README says no later run beat the shipped model on validation (so none replaced it)."""
    card = json.loads((ROOT / "data" / "pretrained" / "capsnet_mnist.json").read_text())
    shipped_errors = round((1 - card["val_accuracy"]) * 5000)
    histories = sorted((ROOT / "docs" / "runs").glob("sweep*/*_history.json"))
    assert len(histories) >= 12
    best = min(row["val_errors"] for path in histories for row in json.loads(path.read_text()))
    assert best == shipped_errors == 14
