"""Simulated brain-MRI subjects and simulated raters, built from the MNI152 template.

Everything this package returns is SIMULATED. There is no multi-subject brain MRI
available offline, so cohorts for the demo, the STAPLE and agreement benchmarks and
the active-learning benchmarks are generated from one real anatomy: the MNI152 2009a
symmetric template (T1, grey- and white-matter probability maps and brain mask) that
nilearn ships inside its package. Each simulated subject is that template with a smooth
random deformation, a change of contrast, a bias field, Rician noise and synthetic white
matter lesions (optionally with another contrast, a head tilt or thick slices, to build
heterogeneous multi-site cohorts); each simulated rater is a seeded perturbation of a truth label map.
Neither is a real patient or a real annotator, and results obtained on them must be
reported as such.

The package is pure: numpy, scipy, nibabel and (lazily, on the first call of
:func:`mni152_anatomy`) nilearn; it never imports Django or an app (an import-linter
contract). Modules: ``anatomy`` (the MNI152 template), ``fields`` (smooth random fields),
``subjects`` (simulated subjects), ``raters`` (simulated raters by profile), ``panels``
(random rater-panel designs for benchmarks).

Measured runtimes and the rater-panel designs: ``docs/simulation.md``.

Conventions
-----------
- Arrays are indexed ``(X, Y, Z)`` in the voxel order nibabel stores them after
  :func:`nibabel.as_closest_canonical` (RAS+); the affine maps ``(i, j, k)`` to
  millimetres.
- Label values are those of :data:`LABELS`: 0 background, 1 CSF, 2 grey matter,
  3 white matter, 4 lesion.
- Every random draw comes from ``np.random.default_rng`` seeded by the caller's
  ``seed`` (through :class:`numpy.random.SeedSequence` children, so that independent
  parts of a simulation use independent streams). The same arguments always give
  bit-identical arrays on the same numpy/scipy versions.
- Deformations and bias fields are defined in millimetres on a node grid anchored to
  the volume, so the same seed deforms the 1 mm and the 2 mm anatomy in the same way
  (lesion positions are drawn per grid and differ between resolutions).
- Raters work in voxels: a rater "one voxel too generous" is 1 mm off at 1 mm and
  2 mm off at 2 mm.

References
----------
.. [1] Fonov V, Evans AC, Botteron K, et al. Unbiased average age-appropriate atlases
   for pediatric studies. NeuroImage 54(1):313-327, 2011. (MNI152 2009 templates.)
.. [2] Rueckert D, Sonoda LI, Hayes C, et al. Nonrigid registration using free-form
   deformations: application to breast MR images. IEEE TMI 18(8):712-721, 1999.
   (Cubic B-spline displacement fields.)
.. [3] Gudbjartsson H, Patz S. The Rician distribution of noisy MRI data. Magn Reson
   Med 34(6):910-914, 1995.
.. [4] Warfield SK, Zou KH, Wells WM. Simultaneous truth and performance level
   estimation (STAPLE). IEEE TMI 23(7):903-921, 2004. (What the raters are for.)
"""

from __future__ import annotations

from ._shared import BACKGROUND, CSF, GREY_MATTER, LABELS, LESION, WHITE_MATTER
from .anatomy import Anatomy, mni152_anatomy
from .lesions import simulate_lesion_case
from .raters import RATER_PROFILES, drop_label_components, rater_seed, simulate_panel, simulate_rater
from .subjects import CONTRASTS, Subject, simulate_subject

__all__ = [
    "BACKGROUND",
    "CONTRASTS",
    "CSF",
    "GREY_MATTER",
    "LABELS",
    "LESION",
    "RATER_PROFILES",
    "WHITE_MATTER",
    "Anatomy",
    "Subject",
    "drop_label_components",
    "mni152_anatomy",
    "rater_seed",
    "simulate_lesion_case",
    "simulate_panel",
    "simulate_rater",
    "simulate_subject",
]
