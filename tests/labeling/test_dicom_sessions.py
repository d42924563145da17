"""Multi-sequence scans from a DICOM study: the series of one session become one scan with its
channels, when the project declares them (labeling/dicom_imports.py, labeling/dicom.import_plan).
All DICOM data SIMULATED (simulation.dicom).

- T1w + FLAIR on one grid: one scan (the T1w series) with a FLAIR channel, not resampled, each
  with its zip of de-identified slices;
- a FLAIR acquired on another grid (axial, 2.4 x 2.4 x 3 mm beside an oblique 2 mm T1w): resampled
  onto the scan's grid, its transform recorded, and its voxels equal to an independent trilinear
  resampling (scipy) of the series as written, by the DICOM geometry;
- two FLAIR series in a session: the later series number is taken, the other ``superseded``; a
  T2w the project does not declare: ``not_declared``; a session without T1w: ``no_reference``;
  what the review shows is what the creation does;
- a lead's role change moves a series from one plan to another; the same study again gives
  duplicates.
"""

from __future__ import annotations

import io
import zipfile

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from labeling import dicom, dicom_imports, services
from labeling.models import DicomImport, Scan, ScanChannel
from simulation import dicom as sim

pytestmark = pytest.mark.django_db

SHAPE = (12, 10, 5)
T2_USABLE = sim.SeriesSpec("T2 TSE AX", 4, tr=5000.0, te=95.0, ti=None)
FLAIR_AGAIN = sim.spec_with(sim.USABLE[1], description="FLAIR AX repeat", number=9)
OTHER_PATIENT = {**sim.FAKE_PHI, "PatientID": "MRN-1100456", "PatientName": "ROE^RICHARD"}


@pytest.fixture(autouse=True)
def spool(settings, tmp_path):
    settings.MRIANNOT_DICOM_SPOOL_DIR = str(tmp_path / "spool")
    return tmp_path / "spool"


def zipped(datasets) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, ds in enumerate(datasets):
            raw = io.BytesIO()
            ds.save_as(raw, enforce_file_format=True)
            archive.writestr(f"{n:05d}.dcm", raw.getvalue())
    return buffer.getvalue()


def declare(world, channels):
    world.project = services.project_update(project=world.project, actor=world.lead, channels=channels)


def run(world, raw: bytes, *, review: bool = False) -> DicomImport:
    return dicom_imports.dicom_study_import(
        project=world.project, actor=world.lead, archive=io.BytesIO(raw), review=review
    )


def by_number(job: DicomImport) -> dict[int, dict]:
    return {row["series_number"]: row for row in dicom_imports.dicom_import_rows(job)}


def test_t1w_and_flair_of_one_session_become_one_scan_with_a_flair_channel(world):
    declare(world, ["T1w", "FLAIR"])
    job = run(world, zipped(sim.study_datasets(shape=SHAPE)))
    rows = by_number(job)
    assert (rows[2]["status"], rows[3]["status"]) == ("stored", "stored")
    scan = Scan.objects.get(project=world.project)
    assert rows[2]["scan"] == rows[3]["scan"] == scan.pk
    assert (scan.sequence, rows[3]["channel"], rows[3]["resampled"]) == ("T1w", "FLAIR", False)
    channel = ScanChannel.objects.get(scan=scan)
    assert (channel.role, channel.resampled, channel.transform) == ("FLAIR", False, None)
    assert scan.dicom_series and channel.dicom_series
    with zipfile.ZipFile(channel.dicom_series.open("rb")) as archive:
        names = archive.namelist()
        first = archive.read(names[0])
    assert len(names) == SHAPE[2] and names[0] == "0001.dcm"
    with dicom.quiet():
        ds = dicom.dataset_read(first)
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == scan.subject_id
    # The FLAIR channel holds the FLAIR series' pixels on the scan's grid.
    series = [d for d in sim.study_datasets(shape=SHAPE, broken=False) if d.SeriesNumber == 3]
    expected = nib.as_closest_canonical(nib.Nifti1Image(dicom.series_volume(series), dicom.series_affine(series)))
    stored = nib.load(channel.image.path)
    np.testing.assert_allclose(stored.affine, scan.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(stored.dataobj), np.asarray(expected.dataobj))
    assert job.summary["scans"] == 1 and job.summary["stored"] == 2 and job.summary["refused"] == 6


def test_a_flair_on_another_grid_is_resampled_onto_the_scan(world):
    declare(world, ["T1w", "FLAIR"])
    study = sim.session_study(seed=4, other_grid=("FLAIR",))
    assert study.images["FLAIR"].shape != study.images["T1w"].shape
    job = run(world, zipped(study.datasets))
    rows = by_number(job)
    flair = rows[study.numbers["FLAIR"]]
    assert flair["status"] == "stored" and flair["resampled"], flair
    assert flair["spacing"] == pytest.approx([2.4, 2.4, 3.0], abs=1e-3)
    scan = Scan.objects.get(project=world.project)
    channel = ScanChannel.objects.get(scan=scan, role="FLAIR")
    assert channel.resampled and channel.coverage > 0.9
    assert channel.source_spacing == pytest.approx([2.4, 2.4, 3.0], abs=1e-3)
    stored = np.asarray(nib.load(channel.image.path).dataobj, dtype=np.float64)
    assert stored.shape == tuple(scan.shape)
    # The oracle: each scan voxel's world position (RAS -> LPS) in the FLAIR series' own voxel
    # indices (the simulation's geometry, not dcm2niix's), sampled trilinearly with scipy.
    written = np.clip(np.round(study.images["FLAIR"]), 0, 65535).astype(np.float64)
    to_flair = np.linalg.inv(study.affines["FLAIR"]) @ np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(scan.affine)
    # The recorded transform: scan voxels to the channel's voxels as uploaded (reoriented to RAS+).
    uploaded = nib.as_closest_canonical(
        nib.Nifti1Image(written, np.diag([-1.0, -1.0, 1.0, 1.0]) @ study.affines["FLAIR"])
    )
    np.testing.assert_allclose(
        np.asarray(channel.transform), np.linalg.inv(uploaded.affine) @ np.asarray(scan.affine), atol=1e-3
    )
    grid = np.indices(stored.shape, dtype=float).reshape(3, -1)
    coords = to_flair[:3, :3] @ grid + to_flair[:3, 3:4]
    expected = ndimage.map_coordinates(written, coords, order=1, cval=0.0).reshape(stored.shape)
    inside = np.all((coords >= 1) & (coords <= np.array(written.shape)[:, None] - 2), axis=0).reshape(stored.shape)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(stored[inside], expected[inside], atol=0.05)
    # And it shows the same head as the T1w: the FLAIR simulated on the T1w's own grid, reoriented.
    t1 = np.asarray(nib.load(scan.image.path).dataobj, dtype=np.float64)
    head = (t1 > 0) & inside
    assert np.corrcoef(stored[head], t1[head])[0, 1] != pytest.approx(1.0, abs=0.01)  # another contrast
    same = sim.session_study(seed=4)  # both contrasts on the T1w grid
    flair_on_t1 = nib.as_closest_canonical(
        nib.Nifti1Image(
            np.clip(np.round(same.images["FLAIR"]), 0, 65535), np.diag([-1.0, -1.0, 1, 1]) @ same.affines["FLAIR"]
        )
    )
    reference = np.asarray(flair_on_t1.dataobj, dtype=np.float64)
    assert np.corrcoef(stored[head], reference[head])[0, 1] > 0.95


def test_superseded_not_declared_and_no_reference(world):
    """Session 1: T1w #2, FLAIR #3 and #9, a usable T2w #4; session 2 (another patient): FLAIR only."""
    declare(world, ["T1w", "FLAIR"])
    first = sim.study_datasets(shape=SHAPE, specs=(*sim.USABLE, FLAIR_AGAIN, T2_USABLE))
    second = sim.study_datasets(
        shape=SHAPE, seed=7, phi=OTHER_PATIENT, specs=(sim.spec_with(sim.USABLE[1], number=12),)
    )
    job = run(world, zipped(first + second), review=True)
    planned = {n: (r["status"], r.get("plan")) for n, r in by_number(job).items()}
    assert planned == {
        2: ("ready", "scan"),
        3: ("ready", "superseded"),
        9: ("ready", "channel"),
        4: ("ready", "not_declared"),
        12: ("ready", "no_reference"),
    }
    rows = by_number(job)
    assert "#9" in rows[3]["plan_detail"] and "T2w" in rows[4]["plan_detail"] and "no T1w" in rows[12]["plan_detail"]
    assert rows[9]["reference"] == rows[2]["index"]
    dicom_imports.dicom_import_confirm(job=job, actor=world.lead, queue=False)
    job = dicom_imports.dicom_import_execute(import_id=job.pk)
    final = {n: r["status"] for n, r in by_number(job).items()}
    assert final == {2: "stored", 3: "superseded", 9: "stored", 4: "not_declared", 12: "no_reference"}
    scan = Scan.objects.get(project=world.project)
    assert list(scan.channels.values_list("role", flat=True)) == ["FLAIR"]
    assert by_number(job)[9]["scan"] == scan.pk
    assert (job.summary["superseded"], job.summary["not_declared"], job.summary["no_reference"]) == (1, 1, 1)


def test_a_role_change_moves_a_series_between_plans(world):
    declare(world, ["T1w", "FLAIR"])
    raw = zipped(sim.study_datasets(shape=SHAPE, specs=(*sim.USABLE, FLAIR_AGAIN)))
    job = run(world, raw, review=True)
    rows = by_number(job)
    job = dicom_imports.dicom_import_roles_set(job=job, actor=world.lead, roles={rows[9]["index"]: "other"})
    planned = {n: r.get("plan") for n, r in by_number(job).items()}
    assert planned == {2: "scan", 3: "channel", 9: "not_declared"}
    dicom_imports.dicom_import_confirm(job=job, actor=world.lead, queue=False)
    job = dicom_imports.dicom_import_execute(import_id=job.pk)
    assert {n: r["status"] for n, r in by_number(job).items()} == {2: "stored", 3: "stored", 9: "not_declared"}
    # The same study again, with the guessed roles: the scan is a duplicate, and it has its FLAIR.
    again = run(world, raw)
    rows = by_number(again)
    assert {n: r["status"] for n, r in rows.items()} == {2: "duplicate", 3: "superseded", 9: "duplicate"}
    assert rows[9]["error"] == "duplicate_channel" and rows[9]["scan"] == rows[2]["scan"]
    assert Scan.objects.count() == 1 and ScanChannel.objects.count() == 1


def test_projects_without_channels_keep_one_scan_per_series(world):
    job = run(world, zipped(sim.study_datasets(shape=SHAPE, specs=(*sim.USABLE, FLAIR_AGAIN))))
    assert {n: r["status"] for n, r in by_number(job).items()} == {2: "stored", 3: "stored", 9: "stored"}
    assert Scan.objects.count() == 3 and not ScanChannel.objects.exists()


def test_import_plan_without_series_numbers_keeps_the_later_series():
    rows = [
        {"index": 1, "status": "ready", "role": "FLAIR", "series_number": None, "subject": "s", "session": "a"},
        {"index": 2, "status": "ready", "role": "FLAIR", "series_number": None, "subject": "s", "session": "a"},
        {"index": 3, "status": "ready", "role": "T1w", "series_number": None, "subject": "s", "session": "a"},
        {"index": 4, "status": "refused", "role": "T1w", "series_number": 1, "subject": "s", "session": "a"},
    ]
    plan = dicom.import_plan(rows, ["T1w", "FLAIR"])
    assert {i: p["plan"] for i, p in plan.items()} == {1: "superseded", 2: "channel", 3: "scan"}
    assert dicom.import_plan(rows, []) == {
        i: {"plan": "scan", "detail": dicom.PLANS["scan"], "reference": None} for i in (1, 2, 3)
    }
