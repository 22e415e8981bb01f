"""Shared pytest setup of the lowbit tests.

* ``@pytest.mark.gpu`` tests are skipped with the reason "no CUDA GPU" where torch sees no CUDA device.
* ``seed`` / ``rng``: a fresh random seed per test (``LOWBIT_TEST_SEED=<int>`` pins it to reproduce a
  failure). The seed is recorded as a test property (junit XML) and printed in a "lowbit seed" section
  of every failure report.
"""
from __future__ import annotations

import os
import random

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped where there is none)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seed(request) -> int:
    """A fresh seed per test, reported on failure."""
    pinned = os.environ.get("LOWBIT_TEST_SEED")
    value = int(pinned) if pinned else random.SystemRandom().randrange(2 ** 31)
    request.node.user_properties.append(("seed", value))
    request.node._lowbit_seed = value
    return value


@pytest.fixture
def rng(seed) -> torch.Generator:
    """A CPU torch.Generator seeded with the test's ``seed``."""
    return torch.Generator().manual_seed(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    value = getattr(item, "_lowbit_seed", None)
    if value is not None and report.failed:
        report.sections.append(("lowbit seed", f"seed={value}  (rerun with LOWBIT_TEST_SEED={value})"))
