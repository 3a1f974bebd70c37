"""Fixtures shared by the test modules, and the default that skips the slow tests."""

from __future__ import annotations

import pytest

SLOW_SKIP_REASON = "slow: run them with -m slow or --slow (.ci/run does)"


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (.ci/run runs them)")


def pytest_collection_modifyitems(config, items):
    """The README's test command stays well under 15 minutes on 2 cores: tests marked ``slow`` (full
    test-set evaluations, torch.compile, benchmarks, a real kill of torchrun) are skipped, with a
    reason that says how to run them, unless ``--slow`` is given or ``-m`` names them."""
    if config.getoption("--slow") or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=SLOW_SKIP_REASON)
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def close_figures():
    """Close every matplotlib figure the test opened; the plot tests use it for each test
    (``pytestmark = pytest.mark.usefixtures("close_figures")``), so figures never pile up."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
