"""Throughput of MC-dropout scoring: scans per hour per CPU worker (patch or whole-volume networks).

Data: SIMULATED subjects from the MNI152 2009a template (``simulation``, 2 mm
by default, ``--resolution 1`` for 1 mm). The network is the default
``NetworkConfig`` of the benchmark, freshly initialised (cost does not depend on the
weights) or loaded from ``--checkpoint`` (bytes of ``save_checkpoint``).

One "scan scored" is what the Django task does per scan: map the stored volume to
the working grid (``to_working``), ``--mc-samples`` MC-dropout passes in one batch,
``scan_uncertainty`` (entropy + BALD over the dilated predicted foreground), and the
pre-label at the original grid from the mean softmax (``probabilities_to_labels``).
Reading the NIfTI file is not included (see ``bench/bench_viewer.py`` for I/O).

``--mode patch`` (the default, what new model versions are): the scan at its own resolution
(``native_grid.network_input``), ``--mc-samples`` passes per sliding window of ``--patch``
(overlap 0.5, Gaussian blending) through ``mc_dropout_moments``, ``uncertainty_from_moments``
(top-k voxels of the dilated predicted foreground) and the pre-label (``network_prelabel``).
``--mode whole``: the earlier whole-volume network on the working grid.

Rows: one per thread count (a worker pinned to N torch threads), median seconds per
scan over ``--scans`` scans after one warm-up, the split into stages, and scans per
hour = 3600 / median. Wall clock, and the process CPU time per scan: on a shared machine
the wall clock is inflated by the others' load (printed with each row), while the CPU time
of a one-thread worker is what it costs on a core of its own.

Usage::

    .venv/bin/python bench/bench_scoring.py                   # 1 and 2 threads, 2 mm
    .venv/bin/python bench/bench_scoring.py --threads 1 --resolution 1 --scans 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from active_learning import native_grid, network, training, uncertainty


def _ints(text):
    return [int(v) for v in text.split(",") if v]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=_ints, default=[1, 2])
    parser.add_argument("--scans", type=int, default=10)
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--margin", type=float, default=3)
    parser.add_argument("--resolution", type=int, default=2, choices=(1, 2))
    parser.add_argument("--mode", choices=("patch", "whole"), default="patch")
    parser.add_argument("--patch", type=_ints, default=[64, 64, 64])
    parser.add_argument("--top-k", type=int, default=200)
    parser.add_argument("--working-shape", type=_ints, default=[48, 56, 48])
    parser.add_argument("--channels", type=_ints, default=[16, 32, 64, 128])
    parser.add_argument("--res-units", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, help="score with this saved model instead")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "out/scoring.json")
    args = parser.parse_args(argv)

    import simulation as sim

    anatomy = sim.mni152_anatomy(resolution=args.resolution)
    subjects = [sim.simulate_subject(anatomy, seed=5000 + i) for i in range(args.scans + 1)]
    if args.checkpoint:
        model, config = network.load_checkpoint(args.checkpoint.read_bytes())
    else:
        config = network.NetworkConfig(
            working_shape=tuple(args.working_shape),
            channels=tuple(args.channels),
            strides=(2,) * (len(args.channels) - 1),
            num_res_units=args.res_units,
            mode=args.mode,
            patch_shape=tuple(args.patch),
            labels=(0, 1) if args.mode == "patch" else (0, 1, 2, 3, 4),
        )
        torch.manual_seed(0)
        model = network.build_network(config).eval()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"SIMULATED MNI152 subjects at {args.resolution} mm {subjects[0].image.shape}; "
        f"mode {config.mode}, "
        + (f"patch {config.patch_shape}, " if config.mode == "patch" else f"working grid {config.working_shape}, ")
        + f"{config.n_classes} classes, channels {config.channels}, "
        f"res units {config.num_res_units}, {params} parameters, T = {args.mc_samples}"
    )
    rows = []
    header = (
        f"{'threads':>7} {'s/scan':>7} {'prep':>6} {'MC':>6} {'score':>6} {'prelabel':>8} {'scans/h':>8} "
        f"{'CPU s':>6} {'load':>5}"
    )
    print(header)
    for threads in args.threads:
        torch.set_num_threads(threads)
        stages = []
        for k, subject in enumerate(subjects):
            c0 = time.process_time()
            t0 = time.perf_counter()
            volume, geometry = native_grid.network_input(subject.image, config=config, spacing=anatomy.spacing)
            t1 = time.perf_counter()
            mean, aleatoric = training.mc_dropout_moments(
                model, volume, n_samples=args.mc_samples, seed=k, config=config
            )
            t2 = time.perf_counter()
            top_k = args.top_k if config.mode == "patch" else None
            uncertainty.uncertainty_from_moments(mean, aleatoric, margin=args.margin, top_k=top_k)
            t3 = time.perf_counter()
            native_grid.network_prelabel(mean, geometry, config=config)
            t4 = time.perf_counter()
            if k:  # the first scan warms up
                stages.append((t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3, time.process_time() - c0))
        s = np.median(np.array(stages), axis=0)
        row = {
            "threads": threads,
            "seconds_per_scan": float(s[0]),
            "prep": float(s[1]),
            "mc": float(s[2]),
            "score": float(s[3]),
            "prelabel": float(s[4]),
            "scans_per_hour": float(3600 / s[0]),
            "cpu_seconds_per_scan": float(s[5]),
            "scans_per_hour_cpu": float(3600 / s[5]),
            "load_average": os.getloadavg()[0],
        }
        rows.append(row)
        print(
            f"{threads:>7} {s[0]:7.3f} {s[1]:6.3f} {s[2]:6.3f} {s[3]:6.3f} {s[4]:8.3f} "
            f"{3600 / s[0]:8.0f} {s[5]:6.2f} {row['load_average']:5.1f}",
            flush=True,
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "config": config.to_dict(),
                "mc_samples": args.mc_samples,
                "resolution_mm": args.resolution,
                "shape": list(subjects[0].image.shape),
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
