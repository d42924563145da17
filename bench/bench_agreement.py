"""Benchmark consensus.agreement on a simulated 5-rater panel, against MONAI 1.6.

Data: ``simulation`` deforms the MNI152 template (1 mm) into one
subject and simulates the five rater profiles; labels 1 (CSF), 2 (GM), 3 (WM).
Nothing is downloaded and nothing real is used.

Rows (wall seconds are the best of ``--repeat`` runs; CPU seconds are the
process's user+system time over the same run, so CPU > wall means threads ran):

* ``agreement_report``: the whole report (30 pairs x 5 figures, kappa/alpha per
  label and overall, volumes).
* ``  surface distances``: the part of it spent on the directed surface
  distances (``_panel_surface_distances``, once per label).
* ``MONAI metrics, same pairs``: DiceMetric, HausdorffDistanceMetric(percentile=95),
  SurfaceDistanceMetric(symmetric=True), SurfaceDiceMetric on every label and
  pair, one run; also the largest relative difference from our figures.
* ``dense EDT ...`` (reference, ``--edt-reference``): what one full Euclidean
  distance transform per rater and label (the textbook design) costs with
  scipy, and with the ``edt`` package if installed.

Usage::

    .venv/bin/python bench/bench_agreement.py            # everything (a few minutes: MONAI is slow)
    .venv/bin/python bench/bench_agreement.py --monai-pairs 3 --no-edt-reference   # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import simulation as sim
from consensus import agreement as ag

LABELS = (1, 2, 3)
TOLERANCE = 2.0


def _finite(x):
    return x if math.isfinite(x) else None


def _timed(fn, repeat):
    """Best wall time over ``repeat`` runs, the CPU time of that run, and the last result."""
    best = (math.inf, math.inf)
    result = None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu)
    return best[0], best[1], result


def _monai_pairs(panel, spacing, pairs_to_run):
    """MONAI figures for the given (label, a, b) triples; wall, cpu, {triple: figures}."""
    import torch
    from monai.metrics import (
        DiceMetric,
        HausdorffDistanceMetric,
        SurfaceDiceMetric,
        SurfaceDistanceMetric,
    )

    sp = [float(s) for s in spacing]
    dice = DiceMetric(include_background=True, ignore_empty=False)
    hd = HausdorffDistanceMetric(include_background=True, percentile=95)
    asd = SurfaceDistanceMetric(include_background=True, symmetric=True)
    nsd = SurfaceDiceMetric([TOLERANCE], include_background=True)
    out = {}
    w0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lab, a, b in pairs_to_run:
            yp = torch.from_numpy(panel[a] == lab)[None, None].float()
            y = torch.from_numpy(panel[b] == lab)[None, None].float()
            out[lab, a, b] = {
                "dice": dice(yp, y).item(),
                "hausdorff95": hd(yp, y, spacing=sp).item(),
                "assd": asd(yp, y, spacing=sp).item(),
                "surface_dice": nsd(yp, y, spacing=sp).item(),
            }
    return time.perf_counter() - w0, time.process_time() - c0, out


def _max_rel_diff(report, monai):
    worst = {}
    for p in report.pairs:
        key = (p["label"], p["rater_a"], p["rater_b"])
        if key not in monai:
            continue
        for name, theirs in monai[key].items():
            ours = p[name]
            if math.isfinite(ours) and math.isfinite(theirs):
                rel = abs(ours - theirs) / max(abs(theirs), 1e-12)
            else:
                rel = 0.0 if (math.isnan(ours) and math.isnan(theirs)) or ours == theirs else math.inf
            worst[name] = max(worst.get(name, 0.0), rel)
    return worst


def _edt_reference(panel, spacing):
    """Seconds for one dense EDT per rater and label, on the same crops, per backend."""
    from scipy import ndimage

    crops = []
    for lab in LABELS:
        masks = panel == lab
        box = ag._bbox(masks.any(axis=0))
        for m in masks:
            padded = np.pad(m[box], 1)
            surface = padded ^ ag._interior(padded)
            crops.append(~surface)
    rows = []
    w0, c0 = time.perf_counter(), time.process_time()
    for c in crops:
        ndimage.distance_transform_edt(c, sampling=spacing)
    rows.append(("dense EDT x15, scipy (reference)", time.perf_counter() - w0, time.process_time() - c0))
    try:
        import edt
    except ImportError:
        rows.append(("dense EDT x15, edt package (not installed)", math.nan, math.nan))
    else:
        threads = len(os.sched_getaffinity(0))
        w0, c0 = time.perf_counter(), time.process_time()
        for c in crops:
            edt.edt(c, anisotropy=tuple(spacing), black_border=False, parallel=threads)
        name = f"dense EDT x15, edt {metadata.version('edt')} parallel={threads} (reference)"
        rows.append((name, time.perf_counter() - w0, time.process_time() - c0))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the report (best is kept)")
    parser.add_argument("--monai-pairs", type=int, default=None, help="only the first N (label, pair)s in MONAI")
    parser.add_argument("--no-monai", action="store_true")
    parser.add_argument("--no-edt-reference", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (e.g. bench/out/)")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    anatomy = sim.mni152_anatomy(resolution=1)
    subject = sim.simulate_subject(anatomy, seed=args.seed)
    panel = sim.simulate_panel(subject.labels, profiles=sim.RATER_PROFILES, seed=args.seed)
    spacing = tuple(float(s) for s in anatomy.spacing)
    t_sim = time.perf_counter() - t0

    def report():
        return ag.agreement_report(panel, spacing=spacing, labels=LABELS, tolerance=TOLERANCE)

    report()  # warm-up: imports, band offsets cache
    wall, cpu, rep = _timed(report, args.repeat)
    s_wall, s_cpu, _ = _timed(
        lambda: [ag._panel_surface_distances(panel == lab, spacing) for lab in LABELS], args.repeat
    )
    rows = [("agreement_report (5 raters x 3 labels)", wall, cpu), ("  of which surface distances", s_wall, s_cpu)]

    worst = {}
    monai_wall = math.nan
    n_monai = 0
    if not args.no_monai:
        triples = [(p["label"], p["rater_a"], p["rater_b"]) for p in rep.pairs]
        if args.monai_pairs is not None:
            triples = triples[: args.monai_pairs]
        n_monai = len(triples)
        m_wall, m_cpu, monai = _monai_pairs(panel, spacing, triples)
        worst = _max_rel_diff(rep, monai)
        scale = len(rep.pairs) / max(n_monai, 1)
        monai_wall = m_wall * scale
        note = "" if n_monai == len(rep.pairs) else f" ({n_monai} of {len(rep.pairs)} run, scaled up)"
        rows.append((f"MONAI 1.6 metrics, same {len(rep.pairs)} pairs{note}", monai_wall, m_cpu * scale))
    if not args.no_edt_reference:
        rows.extend(_edt_reference(panel, spacing))
    load_after = os.getloadavg()

    counts = {lab: [int((panel[r] == lab).sum()) for r in range(panel.shape[0])] for lab in LABELS}
    print(f"# agreement benchmark: simulated MNI152 panel, seed {args.seed}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, cores {len(os.sched_getaffinity(0))}, "
        f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after"
    )
    print(f"volume {panel.shape[1:]} at {spacing} mm, raters {sim.RATER_PROFILES}, simulation took {t_sim:.1f} s")
    for lab in LABELS:
        print(f"  label {lab}: voxels per rater {counts[lab]}")
    print()
    print(f"| step | wall s (best of {args.repeat}) | CPU s |")
    print("|---|---:|---:|")
    for name, w, c in rows:
        print(f"| {name} | {w:.2f} | {c:.2f} |")
    print()
    goal = "PASS" if wall < 5.0 else "FAIL"
    print(f"goal 1, report under 5 s: {wall:.2f} s -> {goal}")
    if n_monai:
        speedup = monai_wall / wall
        print(f"goal 2, at least 5x faster than MONAI: {speedup:.1f}x -> {'PASS' if speedup >= 5 else 'FAIL'}")
        print("largest relative difference from MONAI: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    print("overall:", {str(k): {m: round(v, 4) for m, v in f.items()} for k, f in rep.overall.items()})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "rows": [{"step": n, "wall_s": _finite(w), "cpu_s": _finite(c)} for n, w, c in rows],
            "max_rel_diff_vs_monai": {k: _finite(v) for k, v in worst.items()},
            "report": rep.to_dict(),
        }
        args.json.write_text(json.dumps(payload, indent=1, allow_nan=False, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
