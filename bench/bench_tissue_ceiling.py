"""How high can CSF, grey and white matter Dice go at 2 mm on the SIMULATED multi-site cohort?

Oracles that are given what no model is given (per test scan of the research site, the scans
``bench_lesion_model.py --cohort tissue`` reports on):

- ``atlas``: the undeformed template's labels (what registration without error to the template
  would give, before the subject's own deformation).
- ``intensity``: each brain voxel (TRUE brain mask) labelled by the class whose TRUE intensity
  mean and SD (Gaussian likelihood, measured on the scan's own truth) explain it best.
- ``posterior``: the same likelihood times the template's tissue probability maps (nilearn's
  MNI152 GM and WM, CSF = 1 - GM - WM, blurred by ``--prior-sigma`` voxels for the deformation):
  the classic atlas-prior Bayesian segmentation, with the true parameters.

The truth's labels come from the template's probability maps (argmax of CSF, GM, WM), the image
from the template's T1 intensities: at 2 mm thin sulcal CSF and grey matter share voxels, so part
of the truth cannot be read from the image. Lesion voxels count as white matter here.

Run::

    .venv/bin/python bench/bench_tissue_ceiling.py [--model-json bench/out/tissue_model_3000.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES = {1: "CSF", 2: "grey", 3: "white"}
RESEARCH_TEST_SEEDS = (1025, 1026, 1027, 1028)  # bench_active_learning.simulated_cohort's research-site test scans


def template_priors(sigma: float) -> np.ndarray:
    """(CSF, GM, WM) probabilities of the MNI152 template on the 2 mm grid of ``mni152_anatomy``."""
    import nibabel as nib
    from nilearn import datasets
    from scipy import ndimage as ndi

    gm, wm = (
        np.asarray(nib.as_closest_canonical(loader(resolution=1)).dataobj, dtype=np.float32)[::2, ::2, ::2]
        for loader in (datasets.load_mni152_gm_template, datasets.load_mni152_wm_template)
    )
    if sigma > 0:
        gm, wm = ndi.gaussian_filter(gm, sigma), ndi.gaussian_filter(wm, sigma)
    return np.stack([np.clip(1.0 - gm - wm, 0.0, 1.0), gm, wm]) + 1e-3


def oracles(image: np.ndarray, truth: np.ndarray, atlas: np.ndarray, prior: np.ndarray) -> dict:
    from active_learning.training import dice_per_label

    truth = np.where(truth == 4, 3, truth)
    brain = truth > 0
    log_likelihood = []
    for c in CLASSES:
        values = image[truth == c]
        mean, sd = float(values.mean()), float(values.std())
        log_likelihood.append(-0.5 * ((image - mean) / sd) ** 2 - np.log(sd))
    log_likelihood = np.stack(log_likelihood)
    labels = {
        "atlas": atlas,
        "intensity": np.where(brain, np.argmax(log_likelihood, axis=0) + 1, 0),
        "posterior": np.where(brain, np.argmax(log_likelihood + np.log(prior), axis=0) + 1, 0),
    }
    return {name: dice_per_label(pred, truth, labels=list(CLASSES)) for name, pred in labels.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default=",".join(map(str, RESEARCH_TEST_SEEDS)))
    parser.add_argument("--prior-sigma", type=float, default=1.0)
    parser.add_argument("--model-json", type=Path, default=None, help="bench_lesion_model.py --cohort tissue output")
    args = parser.parse_args(argv)
    import simulation as sim

    anatomy = sim.mni152_anatomy(resolution=2)
    prior = template_priors(args.prior_sigma)
    atlas = np.asarray(anatomy.labels)
    model = {}
    if args.model_json and args.model_json.exists():
        model = {row["id"]: row["dice"] for row in json.loads(args.model_json.read_text())["rows"]}
    rows = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        subject = sim.simulate_subject(anatomy, seed=seed)
        rows[f"sim{seed}"] = oracles(subject.image, subject.labels, atlas, prior)
        if f"sim{seed}" in model:
            rows[f"sim{seed}"]["patch model"] = {c: model[f"sim{seed}"][str(c)] for c in CLASSES}
    methods = list(next(iter(rows.values())))
    print("Dice at 2 mm, SIMULATED research-site test scans, mean (min-max) over scans")
    print()
    print("| method | " + " | ".join(CLASSES.values()) + " |")
    print("|---|" + "---|" * len(CLASSES))
    summary = {}
    for method in methods:
        cells = []
        for c in CLASSES:
            values = np.array([row[method][c] for row in rows.values() if method in row])
            summary.setdefault(method, {})[CLASSES[c]] = float(values.mean())
            cells.append(f"{values.mean():.2f} ({values.min():.2f}-{values.max():.2f})")
        print(f"| {method} | " + " | ".join(cells) + " |")
    return summary


if __name__ == "__main__":
    main()
