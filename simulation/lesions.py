"""A SIMULATED white-matter lesion cohort: binary lesion masks for lesion-segmentation benchmarks.

Each case is :func:`simulation.simulate_subject` (the MNI152 template deformed, re-contrasted,
bias-corrupted, noised) with a seeded number of lesions: none in about 15 % of cases, otherwise
1 to 8. Lesion sizes (equivalent radius log-uniform from ``max(2 mm, 1.25 voxels)`` to 7.5 mm)
and contrasts (70 % T1-hypointense at 0.45-0.75 of white matter, 30 % hyperintense at
1.12-1.3) are ``simulate_subject``'s. The truth is the lesion label alone (0 rest, 1 lesion).
Nothing here is a real patient.

Examples
--------
>>> from simulation import mni152_anatomy
>>> case = simulate_lesion_case(mni152_anatomy(resolution=2), seed=6000)
>>> case.labels.dtype, set(case.labels.ravel().tolist()) <= {0, 1}
(dtype('uint8'), True)
"""

from __future__ import annotations

import numpy as np

from ._shared import LESION
from .anatomy import Anatomy
from .subjects import Subject, simulate_subject

__all__ = ["NO_LESION_PROBABILITY", "simulate_lesion_case"]

NO_LESION_PROBABILITY = 0.15
_MAX_LESIONS = 8


def simulate_lesion_case(anatomy: Anatomy, *, seed: int, contrast: str = "T1w") -> Subject:
    """One SIMULATED lesion case: ``labels`` is 1 on lesion voxels, 0 elsewhere.

    The lesion count is drawn from its own stream (``SeedSequence([seed, 31])``), so the
    subject's deformation, contrast and noise are those of ``simulate_subject(seed=seed)``.
    ``parameters["lesions"]`` lists each lesion (semi-axes in mm, contrast, voxels).
    ``contrast`` (``simulate_subject``'s) gives another sequence of the same case: the same
    lesions and labels, a co-registered image (on "FLAIR" every lesion is bright).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 31]))
    n_lesions = 0 if rng.random() < NO_LESION_PROBABILITY else int(rng.integers(1, _MAX_LESIONS + 1))
    subject = simulate_subject(anatomy, seed=seed, n_lesions=n_lesions, contrast=contrast)
    return Subject(
        image=subject.image,
        labels=(subject.labels == LESION).astype(np.uint8),
        affine=subject.affine,
        seed=subject.seed,
        parameters=subject.parameters,
    )
