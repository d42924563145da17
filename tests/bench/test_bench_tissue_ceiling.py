"""The tissue-ceiling oracles score what they are given: separable intensities are read exactly by
the intensity oracle, and a prior that contradicts the image moves the posterior oracle only where
the intensities are ambiguous."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bench import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_tissue_ceiling")


def _toy():
    truth = np.zeros((12, 12, 12), dtype=np.uint8)
    truth[2:10, 2:10, 2:10] = 3
    truth[2:10, 2:10, 2:4] = 2
    truth[2:10, 2:10, 2] = 1
    truth[5, 5, 5] = 4  # a lesion counts as white matter
    rng = np.random.default_rng(0)
    means = np.array([0.0, 100.0, 400.0, 800.0, 800.0])
    image = means[truth] + rng.normal(0, 5, truth.shape)
    return image, truth


def test_separable_intensities_are_read_exactly(bench):
    image, truth = _toy()
    atlas = np.where(truth == 4, 3, truth)
    uniform = np.full((3, *truth.shape), 1 / 3)
    scores = bench.oracles(image, truth, atlas, uniform)
    assert scores["intensity"] == {1: 1.0, 2: 1.0, 3: 1.0}
    assert scores["posterior"] == {1: 1.0, 2: 1.0, 3: 1.0}
    assert scores["atlas"] == {1: 1.0, 2: 1.0, 3: 1.0}


def test_a_prior_decides_only_ambiguous_voxels(bench):
    image, truth = _toy()
    ambiguous = image.copy()
    ambiguous[truth == 1] = 400.0 + np.random.default_rng(1).normal(0, 5, int((truth == 1).sum()))  # CSF looks grey
    prior = np.full((3, *truth.shape), 0.01)
    prior[0][truth == 1] = 0.98  # the template says CSF there
    prior[1][truth == 2] = prior[2][truth >= 3] = 0.98
    blind = bench.oracles(ambiguous, truth, truth, np.full((3, *truth.shape), 1 / 3))
    informed = bench.oracles(ambiguous, truth, truth, prior)
    assert blind["intensity"][1] < 0.8 and informed["intensity"][1] == blind["intensity"][1]
    assert informed["posterior"][1] == 1.0
