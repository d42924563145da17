"""The active-learning benchmark runs on a cohort given as an nnU-Net raw folder.

A tiny folder of synthetic phantoms (not anatomy) in nnU-Net v2 raw layout, one seed, a
2-point schedule and a tiny network: the run must finish, write its JSON and PNG, and
stop with a clear message on a folder that breaks the layout's rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests import factories
from tests.bench import load_bench

SHAPE = (24, 20, 16)


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_active_learning")


def _nnunet_folder(folder: Path, n: int, *, labels: dict) -> Path:
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    truth = factories.sphere_truth(SHAPE)
    for i in range(n):
        rng = np.random.default_rng(i)
        shifted = np.roll(truth, int(rng.integers(-2, 3)), axis=0)
        image = (100.0 * shifted + rng.normal(0, 10, SHAPE)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), folder / "imagesTr" / f"case{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(shifted, affine), folder / "labelsTr" / f"case{i:03d}.nii.gz")
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T1w"},
                "labels": labels,
                "numTraining": n,
                "file_ending": ".nii.gz",
            }
        )
    )
    return folder


def _arguments(folder: Path, out: Path) -> list[str]:
    return [
        "--nnunet-dir",
        str(folder),
        "--n-test",
        "2",
        "--seeds",
        "1",
        "--schedule",
        "2,3",
        "--working-shape",
        "16,16,16",
        "--channels",
        "4,8",
        "--steps",
        "2",
        "--steps-per-scan",
        "0",
        "--mc-samples",
        "2",
        "--threads",
        str(torch.get_num_threads()),  # main() sets it for the process
        "--json",
        str(out / "al.json"),
        "--png",
        str(out / "al.png"),
    ]


@pytest.mark.slow
def test_benchmark_runs_on_an_nnunet_raw_folder(bench, tmp_path, capsys):
    folder = _nnunet_folder(tmp_path / "Dataset001_Phantom", 6, labels={"background": 0, "outer": 1, "inner": 2})
    bench.main(_arguments(folder, tmp_path))
    results = json.loads((tmp_path / "al.json").read_text())
    assert results["source"].startswith("nnU-Net raw folder")
    assert results["network"]["labels"] == [0, 1, 2]
    assert len(results["pool_sites"]) == 4 and len(results["test_sites"]) == 2
    (seed,) = results["seeds"]
    for strategy in ("random", "entropy", "bald"):
        rounds = seed["strategies"][strategy]
        assert [r["n"] for r in rounds] == [2, 3]
        assert all(0.0 <= r["dice"] <= 1.0 for r in rounds)
        assert len(rounds[1]["added"]) == 1 and rounds[1]["added"][0] in results["pool_sites"]
    assert seed["full"]["n"] == 4
    assert (tmp_path / "al.png").stat().st_size > 1000
    assert "| random |" in capsys.readouterr().out


def test_benchmark_names_label_values_missing_from_dataset_json(bench, tmp_path):
    folder = _nnunet_folder(tmp_path / "Dataset002_Phantom", 3, labels={"background": 0, "outer": 1})
    with pytest.raises(SystemExit, match=r"label values \[2\] that dataset.json does not name"):
        bench.nnunet_cohort(folder)


def test_benchmark_refuses_a_folder_without_the_layout(bench, tmp_path):
    with pytest.raises(SystemExit, match="has no imagesTr/ and labelsTr/"):
        bench.nnunet_cohort(tmp_path)
