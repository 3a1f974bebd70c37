"""Fixtures shared by the test modules, and the default run that leaves out the opt-in tests."""

from __future__ import annotations

import re

import pytest

# Markers of the opt-in tests: the default run (the README's test command) skips them, so that it
# stays the library tests only. `-m` naming a marker, or --all, runs them; .ci/run runs them all.
OPT_IN = ("notebooks", "browser", "slow")
OPT_IN_EXPRESSION = " or ".join(OPT_IN)  # the README's line and .ci/run: pytest -m "notebooks or browser or slow"
OPT_IN_SKIP_REASON = '{marker}: opt-in, run with -m "{expression}" or --all (.ci/run does)'


def pytest_addoption(parser):
    parser.addoption(
        "--all", action="store_true", help=f"also run the opt-in tests ({', '.join(OPT_IN)}), as .ci/run does"
    )


def opted_in(markexpr: str, run_all: bool) -> set[str]:
    """The opt-in markers this run asked for: every one under ``--all``, else those the ``-m``
    expression names (``-m "not slow"`` names slow too: then ``-m`` alone decides, as it says)."""
    if run_all:
        return set(OPT_IN)
    return set(OPT_IN) & set(re.findall(r"\w+", markexpr or ""))


def pytest_collection_modifyitems(config, items):
    """Skip the opt-in tests the run did not ask for, with a reason that says how to run them."""
    wanted = opted_in(config.getoption("markexpr"), config.getoption("--all"))
    for item in items:
        marker = next((m for m in OPT_IN if m not in wanted and item.get_closest_marker(m)), None)
        if marker is not None:
            reason = OPT_IN_SKIP_REASON.format(marker=marker, expression=OPT_IN_EXPRESSION)
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def close_figures():
    """Close every matplotlib figure the test opened; the plot tests use it for each test
    (``pytestmark = pytest.mark.usefixtures("close_figures")``), so figures never pile up."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


# MNIST read once per test session, for every module that needs real digits. The tensors are
# shared: a test that changes them must clone first.
@pytest.fixture(scope="session")
def mnist_train_set():
    """The MNIST training set as a dataset of ``(image (1, 28, 28), label)`` (for ``Subset`` and ``fit``)."""
    from capslib.data import mnist

    return mnist(train=True)


@pytest.fixture(scope="session")
def mnist_test_tensors():
    """The 10,000 MNIST test images and labels: ``(10000, 1, 28, 28)`` in [0, 1], ``(10000,)``."""
    from capslib.data import mnist, to_tensors

    return to_tensors(mnist(train=False))


@pytest.fixture(scope="session")
def mnist_train_tensors():
    """The 60,000 MNIST training images and labels: ``(60000, 1, 28, 28)`` in [0, 1], ``(60000,)``."""
    from capslib.data import mnist, to_tensors

    return to_tensors(mnist(train=True))


def seeded_capsnet(seed: int = 0, **kwargs):
    """A CapsNet with weights drawn from ``seed`` (eval mode): the same model wherever a test asks
    for it. ``kwargs`` go to :class:`capslib.CapsNet` (e.g. a small ``conv_channels=16, num_types=4``)."""
    import torch

    import capslib

    torch.manual_seed(seed)
    return capslib.CapsNet(**kwargs).eval()


@pytest.fixture(scope="session")
def make_capsnet():
    """:func:`seeded_capsnet` for a test that needs a model of its own (one it trains or changes)."""
    return seeded_capsnet


@pytest.fixture(scope="session")
def capsnet():
    """The paper's CapsNet with seed-0 random weights, in eval mode, shared by the session: do not train it."""
    return seeded_capsnet(0)


@pytest.fixture(scope="session")
def small_capsnet():
    """A small CapsNet (16 Conv1 channels, 4 capsule types) with seed-0 random weights, eval mode, shared."""
    return seeded_capsnet(0, conv_channels=16, num_types=4)
