"""Benchmark the server's editing operations (labeling/editing.py) on SIMULATED scans.

Subjects: ``simulation.simulate_subject`` of the MNI152 anatomy at 2 mm (99 x 117 x 95) and
1 mm (197 x 233 x 189); nothing real, nothing downloaded.

Grow from seeds is scored on seed strokes a person might paint, with a known truth:

* ``lesion``: the simulated white-matter lesion closest to 10 mm across (``n_lesions=4``);
  one stroke inside it and a ring around it on the axial, coronal and sagittal slice
  through its centre.
* ``ventricles``: the deep CSF (the lateral ventricles and the CSF next to them: CSF more than
  16 mm inside the brain, opened, its large pieces, grown back into CSF more than 12 mm
  inside); strokes inside (the skeleton of the slice) on three axial slices (30, 50, 70 % of
  its height) and the central coronal and sagittal slice, and a ring 3 mm around it on each.
* ``whole volume``: a stress case for speed: short strokes in CSF, grey and white matter on the
  same five slices and a ring around the head, so that the region is the whole head. Grow from
  seeds is not a tissue classifier (it cannot reach every sulcus from a few strokes): its Dice
  there is reported, not aimed at.

The ring strokes carry a scratch value (``outside``) that comes back as background; Dice is of
the structure's label against its truth. Methods, on the same region (the seeds' bounding box
grown by 10 %):

* ``ours``: :func:`labeling.editing.grow_from_seeds` as the API runs it (geodesic competition,
  boundary refined when every label has 100 seed voxels);
* ``geodesic``: the same without the refinement;
* peers: scikit-image ``random_walker`` (beta 500, cg_j, standardised image; skipped above
  300 000 voxels: minutes), scikit-image ``MCP_Geometric`` on the same cost (the exact geodesic
  labels: a heap instead of sweeps), scikit-image ``watershed`` and SimpleITK
  ``MorphologicalWatershedFromMarkers`` on the same gradient. On a region over 100 000 voxels a
  peer runs once; ours runs 5 times at 2 mm and 3 times at 1 mm (p50).

``--tune`` scores variants (gradient sigma, flat cost, refinement, random-walker beta) on the
tuning subjects (seeds 1-5 at 2 mm, 1-3 at 1 mm); the default run reports on other subjects
(seeds 11-15 at 2 mm, 11-13 at 1 mm). The other operations (islands, margin, smooth,
interpolate) are timed on the 1 mm and 2 mm truth with a SimpleITK peer where one exists.

Usage::

    .venv/bin/python bench/bench_grow_from_seeds.py                  # report (a few minutes)
    .venv/bin/python bench/bench_grow_from_seeds.py --tune           # the tuning table
    .venv/bin/python bench/bench_grow_from_seeds.py --quick          # 2 mm, one subject
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import simulation as sim
from labeling import editing

OUTSIDE = 9  # the scratch value of the ring strokes
INSIDE = {"lesion": sim.LESION, "ventricles": sim.CSF}
RW_MAX_VOXELS = 300_000
TUNE_SEEDS = {2: (1, 2, 3, 4, 5), 1: (1, 2, 3)}
REPORT_SEEDS = {2: (11, 12, 13, 14, 15), 1: (11, 12, 13)}


# --------------------------------------------------------------------------- truths and strokes


def lesion_truth(subject) -> np.ndarray:
    """The simulated lesion closest to 10 mm across (equivalent diameter)."""
    lesions = subject.parameters["lesions"]
    diameters = [2 * float(np.prod(lesion["semi_axes_mm"])) ** (1 / 3) for lesion in lesions]
    chosen = lesions[int(np.argmin([abs(d - 10) for d in diameters]))]
    pieces, _ = ndi.label(subject.labels == sim.LESION, np.ones((3, 3, 3), bool))
    points = np.argwhere(pieces > 0)
    nearest = points[np.argmin(((points - np.asarray(chosen["centre_voxel"])) ** 2).sum(axis=1))]
    return pieces == pieces[tuple(nearest)]


def ventricles_truth(subject, spacing) -> np.ndarray:
    """The deep CSF: the lateral ventricles and the CSF that touches them (see the module notes)."""
    csf = subject.labels == sim.CSF
    depth = ndi.distance_transform_edt(ndi.binary_fill_holes(subject.labels > 0), sampling=spacing)
    deep = ndi.binary_opening(csf & (depth > 16), ndi.generate_binary_structure(3, 1))
    pieces, _ = ndi.label(deep, np.ones((3, 3, 3), bool))
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    core = np.isin(pieces, np.flatnonzero(sizes >= 0.3 * sizes.max()))
    return ndi.binary_dilation(core, ndi.generate_binary_structure(3, 1), mask=csf & (depth > 12))


def stroke_planes(mask: np.ndarray, n_axial: int) -> list[tuple[int, int]]:
    """(axis, index) of the slices a person paints on: axial slices across the structure's
    height, and the coronal and sagittal slice through its centre."""
    points = np.argwhere(mask)
    low, high = points.min(axis=0), points.max(axis=0)
    centre = np.rint(points.mean(axis=0)).astype(int)
    if n_axial == 1:
        axial = [int(centre[2])]
    else:
        axial = [round(low[2] + f * (high[2] - low[2])) for f in np.linspace(0.3, 0.7, n_axial)]
    return [(2, z) for z in axial] + [(1, int(centre[1])), (0, int(centre[0]))]


def _plane(axis: int, index: int):
    where = [slice(None)] * 3
    where[axis] = index
    return tuple(where)


def structure_strokes(mask, spacing, planes, inside: int, *, ring_mm: float = 3.0) -> np.ndarray:
    """Strokes inside (the slice's skeleton: a line along the middle) and a ring ``ring_mm``
    around the structure, one voxel wide, on each plane."""
    from skimage.morphology import skeletonize

    seeds = np.zeros(mask.shape, np.uint8)
    for axis, index in planes:
        where = _plane(axis, index)
        shape2d = mask[where]
        if not shape2d.any():
            continue
        sampling = [spacing[a] for a in range(3) if a != axis]
        seeds[where][skeletonize(shape2d)] = inside
        away = ndi.distance_transform_edt(~shape2d, sampling=sampling)
        seeds[where][(away > ring_mm) & (away <= ring_mm + max(sampling))] = OUTSIDE
    return seeds


def tissue_strokes(labels, spacing, planes, rng, *, per_tissue: int = 4, length_mm: float = 10.0) -> np.ndarray:
    """Short strokes deep in CSF, grey and white matter on each plane, and a ring around the head."""
    seeds = np.zeros(labels.shape, np.uint8)
    for axis, index in planes:
        where = _plane(axis, index)
        tissue = labels[where]
        sampling = [spacing[a] for a in range(3) if a != axis]
        step = max(sampling)
        for value in (sim.CSF, sim.GREY_MATTER, sim.WHITE_MATTER):
            inside = tissue == value
            if not inside.any():
                continue
            depth = ndi.distance_transform_edt(inside, sampling=sampling)
            candidates = np.argwhere(depth >= min(depth.max(), 2 * step) * 0.99)
            for centre in candidates[rng.choice(len(candidates), min(per_tissue, len(candidates)), replace=False)]:
                dot = np.zeros(inside.shape, bool)
                dot[tuple(centre)] = True
                stroke = ndi.binary_dilation(dot, iterations=round(length_mm / 2 / step), mask=depth >= 1.5 * step)
                seeds[where][stroke & inside] = value
        away = ndi.distance_transform_edt(~ndi.binary_fill_holes(tissue > 0), sampling=sampling)
        seeds[where][(away > 4) & (away <= 4 + step)] = OUTSIDE
    return seeds


def cases(subject, spacing, seed):
    """(name, seeds, truth: {label: mask}) for one subject."""
    out = []
    lesion = lesion_truth(subject)
    out.append(("lesion", structure_strokes(lesion, spacing, stroke_planes(lesion, 1), sim.LESION), {4: lesion}))
    ventricles = ventricles_truth(subject, spacing)
    planes = stroke_planes(ventricles, 3)
    out.append(("ventricles", structure_strokes(ventricles, spacing, planes, sim.CSF), {1: ventricles}))
    planes = stroke_planes(subject.labels > 0, 3)
    seeds = tissue_strokes(subject.labels, spacing, planes, np.random.default_rng(seed))
    out.append(("whole volume", seeds, {v: subject.labels == v for v in (1, 2, 3)}))
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def score(result: np.ndarray, truth: dict) -> float:
    return float(np.mean([dice(result == value, mask) for value, mask in truth.items()]))


# --------------------------------------------------------------------------- methods


def _in_region(seeds, grow):
    """Run ``grow(values_region, seeds_region)`` on the default region; the full label map back."""

    def run(image):
        box = editing.default_roi(seeds > 0)
        region = grow(np.asarray(image[box], np.float32), seeds[box])
        out = seeds.copy()
        out[box] = np.where(seeds[box] == 0, region, seeds[box])
        out[out == OUTSIDE] = 0
        return out

    return run


@contextlib.contextmanager
def settings(**values):
    """Set module constants of labeling.editing for a variant (the bench's tuning only)."""
    old = {name: getattr(editing, name) for name in values}
    for name, value in values.items():
        setattr(editing, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(editing, name, value)


def ours(seeds, spacing, **constants):
    def run(image):
        with settings(**constants):
            return editing.grow_from_seeds(seeds, image, spacing=spacing, outside=OUTSIDE)

    return run


def geodesic_only(seeds, spacing, **constants):
    return ours(seeds, spacing, REFINE_MIN_SEEDS=10**12, **constants)


def random_walker_peer(seeds, spacing, beta=500.0):
    """scikit-image's random walker (cg_j) on the standardised image of the same region."""
    from skimage.segmentation import random_walker

    def grow(values, region_seeds):
        data = (values - values.mean()) / max(float(values.std()), 1e-6)
        present = np.concatenate([[0], np.flatnonzero(np.bincount(region_seeds.ravel())[1:]) + 1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grown = random_walker(
                data.astype(np.float64),
                region_seeds.astype(np.int32),
                beta=beta,
                mode="cg_j",
                tol=1e-3,
                spacing=np.asarray(spacing, float),
            )
        return present.astype(np.uint8)[grown]  # scikit-image numbers the labels 1..n

    return _in_region(seeds, grow)


def mcp_peer(seeds, spacing):
    from skimage.graph import MCP_Geometric

    def grow(values, region_seeds):
        cost = editing.gradient_cost(values, region_seeds, spacing).astype(np.float64)
        mcp = MCP_Geometric(cost, fully_connected=False, sampling=tuple(spacing))
        starts = np.argwhere(region_seeds > 0)
        _, traceback = mcp.find_costs([tuple(p) for p in starts])
        # follow every voxel's predecessor to its seed (pointer doubling)
        offsets = np.asarray(mcp.offsets)
        strides = np.array([int(np.prod(values.shape[a + 1 :])) for a in range(3)])
        flat = traceback.ravel()
        parent = np.arange(flat.size) - np.where(flat >= 0, (offsets @ strides)[np.maximum(flat, 0)], 0)
        while True:
            hop = parent[parent]
            if np.array_equal(hop, parent):
                break
            parent = hop
        return region_seeds.ravel()[parent].reshape(values.shape)

    return _in_region(seeds, grow)


def watershed_peer(seeds, spacing):
    from skimage.segmentation import watershed

    return _in_region(
        seeds,
        lambda values, s: watershed(editing.gradient_cost(values, s, spacing), s.astype(np.int32)).astype(np.uint8),
    )


def sitk_watershed_peer(seeds, spacing):
    import SimpleITK as sitk

    def grow(values, s):
        gradient = sitk.GetImageFromArray(editing.gradient_cost(values, s, spacing).transpose(2, 1, 0))
        markers = sitk.GetImageFromArray(np.ascontiguousarray(s.transpose(2, 1, 0)).astype(np.uint8))
        out = sitk.MorphologicalWatershedFromMarkers(gradient, markers, markWatershedLine=False, fullyConnected=False)
        return sitk.GetArrayFromImage(out).transpose(2, 1, 0).astype(np.uint8)

    return _in_region(seeds, grow)


def _have_sitk() -> bool:
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        return False
    return True


def grow_methods(seeds, spacing, *, tune: bool):
    roi_voxels = int(np.prod([s.stop - s.start for s in editing.default_roi(seeds > 0)]))
    methods = {"ours": ours(seeds, spacing), "geodesic": geodesic_only(seeds, spacing)}
    if roi_voxels <= RW_MAX_VOXELS:
        methods["random walker"] = random_walker_peer(seeds, spacing)
    if tune:
        for sigma in (0.25, 1.0):
            methods[f"geodesic sigma {sigma} voxel"] = geodesic_only(seeds, spacing, GRADIENT_SIGMA_VOXELS=sigma)
        for flat in (0.002, 0.05):
            methods[f"geodesic flat cost {flat}"] = geodesic_only(seeds, spacing, FLAT_COST=flat)
        methods["geodesic + refine (always)"] = ours(seeds, spacing, REFINE_MIN_SEEDS=0)
        methods["geodesic, exact (no round limit)"] = geodesic_only(seeds, spacing, MAX_ROUNDS=10**6)
        if roi_voxels <= RW_MAX_VOXELS:
            for beta in (130.0, 2000.0):
                methods[f"random walker beta {beta:g}"] = random_walker_peer(seeds, spacing, beta)
    else:
        methods["skimage MCP_Geometric (same cost)"] = mcp_peer(seeds, spacing)
        methods["skimage watershed (same gradient)"] = watershed_peer(seeds, spacing)
        if _have_sitk():
            methods["SimpleITK watershed from markers"] = sitk_watershed_peer(seeds, spacing)
    return methods, roi_voxels


def timed(fn, runs: int):
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


# --------------------------------------------------------------------------- grow: tables


def grow_rows(resolutions, seeds_by_resolution, *, tune: bool, runs: dict):
    rows = []
    for resolution in resolutions:
        anatomy = sim.mni152_anatomy(resolution=resolution)
        spacing = anatomy.spacing
        for seed in seeds_by_resolution[resolution]:
            subject = sim.simulate_subject(anatomy, seed=seed, n_lesions=4)
            for name, seeds, truth in cases(subject, spacing, seed):
                methods, roi_voxels = grow_methods(seeds, spacing, tune=tune)
                for method, fn in methods.items():
                    # peers on a large region run once (the random walker takes minutes there)
                    mine = method in ("ours", "geodesic")
                    repeat = runs[resolution] if mine or roi_voxels <= 100_000 else 1
                    ms, result = timed(lambda fn=fn, image=subject.image: fn(image), repeat)
                    rows.append(
                        {
                            "resolution_mm": resolution,
                            "seed": seed,
                            "case": name,
                            "method": method,
                            "roi_voxels": roi_voxels,
                            "seed_voxels": int((seeds > 0).sum()),
                            "dice": round(score(result, truth), 4),
                            "p50_ms": round(ms, 1),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows):
    """Mean Dice and p50 ms per (resolution, case, method) over the subjects."""
    groups = {}
    for row in rows:
        groups.setdefault((row["resolution_mm"], row["case"], row["method"]), []).append(row)
    table = []
    for (resolution, case, method), items in groups.items():
        table.append(
            {
                "resolution_mm": resolution,
                "case": case,
                "method": method,
                "subjects": len(items),
                "dice_mean": round(float(np.mean([r["dice"] for r in items])), 3),
                "dice_min": round(float(np.min([r["dice"] for r in items])), 3),
                "p50_ms": round(float(np.median([r["p50_ms"] for r in items])), 0),
                "roi_voxels": int(np.median([r["roi_voxels"] for r in items])),
            }
        )
    return table


def print_table(table, title):
    print(f"\n{title}")
    print("| res | case | method | subjects | Dice mean (min) | p50 ms | region voxels |")
    print("|---|---|---|---|---|---|---|")
    for t in table:
        print(
            f"| {t['resolution_mm']} mm | {t['case']} | {t['method']} | {t['subjects']} | "
            f"{t['dice_mean']:.3f} ({t['dice_min']:.3f}) | {t['p50_ms']:.0f} | {t['roi_voxels']} |"
        )


# --------------------------------------------------------------------------- other operations


def other_rows(resolutions, runs):
    rows = []
    for resolution in resolutions:
        anatomy = sim.mni152_anatomy(resolution=resolution)
        spacing = anatomy.spacing
        subject = sim.simulate_subject(anatomy, seed=11, n_lesions=4)
        labels = np.asarray(sim.simulate_rater(subject.labels, profile="sloppy", seed=3), np.uint8)
        ventricles = ventricles_truth(subject, spacing)
        sparse = np.zeros(labels.shape, np.uint8)
        drawn = np.flatnonzero(ventricles.any(axis=(0, 1)))[::5]
        sparse[:, :, drawn] = np.where(ventricles[:, :, drawn], 1, 0)
        ops = operations(labels, sparse, spacing)
        peers = sitk_peers(labels, spacing) if _have_sitk() else {}
        for name, fn in ops.items():
            ms, result = timed(fn, runs[resolution])
            row = {"resolution_mm": resolution, "operation": name, "p50_ms": round(ms, 1)}
            if name.startswith("interpolate"):
                row["dice_vs_truth"] = round(dice(result == 1, ventricles), 3)
            if name in peers:
                peer_ms, peer_result = timed(peers[name], runs[resolution])
                row["sitk_p50_ms"] = round(peer_ms, 1)
                row["agrees_with_sitk"] = round(float(np.mean(peer_result == result)), 6)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def operations(labels, sparse, spacing):
    """The timed operations: on a simulated rater's label map (islands, margin, smooth) and on the
    ventricles drawn on every 5th axial slice (interpolate)."""
    return {
        "islands remove_small 50 mm3 (all labels)": lambda: editing.islands(
            labels, spacing=spacing, label=None, mode="remove_small", min_mm3=50
        ),
        "islands keep_largest (WM)": lambda: editing.islands(labels, spacing=spacing, label=3, mode="keep_largest"),
        "margin +2 mm (WM)": lambda: editing.margin(labels, spacing=spacing, label=3, mm=2),
        "margin -2 mm (WM)": lambda: editing.margin(labels, spacing=spacing, label=3, mm=-2),
        "smooth 1 mm (WM)": lambda: editing.smooth(labels, spacing=spacing, label=3, mm=1),
        "interpolate (ventricles drawn every 5th axial slice)": lambda: editing.interpolate(
            sparse, spacing=spacing, label=1, axis=2
        ),
    }


def sitk_peers(labels, spacing):
    """SimpleITK doing the same where it can (not for interpolation)."""
    import SimpleITK as sitk

    def image(mask):
        img = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8))
        img.SetSpacing([float(s) for s in spacing])
        return img

    def back(img):
        return sitk.GetArrayFromImage(img).transpose(2, 1, 0)

    def keep_largest():
        wm = labels == 3
        pieces = sitk.RelabelComponent(sitk.ConnectedComponent(image(wm), True), sortByObjectSize=True)
        out = labels.copy()
        out[wm & (back(pieces) != 1)] = 0
        return out

    def remove_small():
        out = labels.copy()
        for value in np.flatnonzero(np.bincount(labels.ravel())[1:]) + 1:
            mask = labels == value
            pieces = sitk.ConnectedComponent(image(mask), True)
            voxel = float(np.prod(spacing))
            kept = back(sitk.RelabelComponent(pieces, minimumObjectSize=int(np.ceil(50 / voxel))))
            out[mask & (kept == 0)] = 0
        return out

    def margin(mm):
        def run():
            wm = labels == 3
            distance = back(
                sitk.SignedMaurerDistanceMap(
                    image(wm), insideIsPositive=False, useImageSpacing=True, squaredDistance=False
                )
            )
            out = labels.copy()
            if mm > 0:
                out[(distance <= mm + 1e-6) & ~wm] = 3
            else:
                # Maurer's distance is to the boundary between voxels: inside voxels are >= half a voxel away
                out[wm & (distance >= mm - 1e-6)] = 0
            return out

        return run

    def smooth():
        wm = labels == 3
        blurred = back(
            sitk.DiscreteGaussian(
                sitk.Cast(image(wm), sitk.sitkFloat32), variance=1.0, maximumKernelWidth=64, useImageSpacing=True
            )
        )
        out = labels.copy()
        out[wm & (blurred < 0.5)] = 0
        out[(blurred >= 0.5) & (labels == 0)] = 3
        return out

    return {
        "islands remove_small 50 mm3 (all labels)": remove_small,
        "islands keep_largest (WM)": keep_largest,
        "margin +2 mm (WM)": margin(2),
        "smooth 1 mm (WM)": smooth,
    }


# --------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tune", action="store_true", help="score the variants on the tuning subjects")
    parser.add_argument("--quick", action="store_true", help="2 mm, one subject, one run")
    parser.add_argument("--resolutions", default="2,1")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "grow_from_seeds.json"))
    args = parser.parse_args(argv)
    resolutions = [int(r) for r in args.resolutions.split(",")]
    runs = {2: 1, 1: 1} if args.tune else {2: 5, 1: 3}
    seeds = TUNE_SEEDS if args.tune else REPORT_SEEDS
    if args.quick:
        resolutions, runs, seeds = [2], {2: 1, 1: 1}, {2: seeds[2][:1], 1: seeds[1][:1]}
    started = time.time()
    rows = grow_rows(resolutions, seeds, tune=args.tune, runs=runs)
    table = summary(rows)
    others = [] if args.tune else other_rows(resolutions, runs)
    print_table(table, "Grow from seeds (" + ("tuning" if args.tune else "report") + " subjects)")
    if others:
        print("\n| res | operation | p50 ms | SimpleITK p50 ms | agreement with SimpleITK |")
        print("|---|---|---|---|---|")
        for row in others:
            extra = f" (Dice vs truth {row['dice_vs_truth']})" if "dice_vs_truth" in row else ""
            print(
                f"| {row['resolution_mm']} mm | {row['operation']}{extra} | {row['p50_ms']:.0f} | "
                f"{row.get('sitk_p50_ms', '-')} | {row.get('agrees_with_sitk', '-')} |"
            )
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "processor": platform.processor()}
    out = Path(args.out)
    if args.tune:
        out = out.with_name(out.stem + "_tune.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "grow": rows, "summary": table, "operations": others}, indent=1))
    print(f"\n{time.time() - started:.0f} s; written {out}")


if __name__ == "__main__":
    main()
