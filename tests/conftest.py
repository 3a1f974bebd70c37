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


# MNIST read once per test session, for every module that needs real digits. The tensors are
# shared: a test that changes them must clone first.
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
