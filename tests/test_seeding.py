"""Every test starts from seeded global generators (tests/conftest.py), whatever ran before it."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.conftest import seed_for_test


def _expected_first_draws(nodeid: str) -> tuple[float, float, float]:
    seed = seed_for_test(nodeid)
    py = random.Random(seed).random()
    npy = float(np.random.RandomState(seed).random_sample())
    pt = float(torch.rand(1, generator=torch.Generator().manual_seed(seed)))
    return py, npy, pt


@pytest.mark.parametrize("burn", [0, 1000])
def test_global_generators_start_from_the_test_seed(request: pytest.FixtureRequest, burn: int) -> None:
    expected = _expected_first_draws(request.node.nodeid)
    assert (random.random(), float(np.random.random_sample()), float(torch.rand(1))) == expected
    # leave the generators far from where the next test must find them
    for _ in range(burn):
        random.random()
    np.random.random_sample(burn)
    torch.rand(burn)


def test_seeds_differ_between_tests() -> None:
    assert seed_for_test("tests/a.py::t") != seed_for_test("tests/a.py::u")
