"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest


@pytest.fixture
def close_figures():
    """Close every matplotlib figure the test opened; the plot tests use it for each test
    (``pytestmark = pytest.mark.usefixtures("close_figures")``), so figures never pile up."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
