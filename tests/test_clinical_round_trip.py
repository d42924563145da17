"""A DICOM study in, its ground truth out: the whole clinical path of issue 15. All data SIMULATED.

A lead imports a zipped DICOM study holding a T1w and a FLAIR series (with invented PHI) into a
project that declares both sequences; it becomes one scan with a FLAIR channel. Its raters label
it, the consensus becomes the ground truth, and the project exports it:

- as a two-channel nnU-Net dataset that nnU-Net's own ``verify_dataset_integrity`` accepts, the
  ``_0001`` image equal to the stored FLAIR channel;
- as DICOM-SEG: the export's own check passed (highdicom read-back voxel for voxel, dciodvfy),
  and the Segmentation references the de-identified T1w slices that were stored at import (same
  Study Instance UID, its frames pointing at those SOP Instance UIDs), with no PHI value in it.
"""

from __future__ import annotations

import io
import json
import zipfile

import highdicom as hd
import numpy as np
import pydicom
import pytest
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

from consensus import services as consensus_services
from consensus.models import ConsensusRun
from labeling import dicom_imports, services, volumes
from labeling.models import Scan
from mriannot.jobs import JobStatus
from simulation import dicom as sim
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

SHAPE = (16, 14, 8)


@pytest.fixture(autouse=True)
def spool(settings, tmp_path):
    settings.MRIANNOT_DICOM_SPOOL_DIR = str(tmp_path / "spool")


def _study_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, ds in enumerate(sim.study_datasets(shape=SHAPE, broken=False)):
            raw = io.BytesIO()
            ds.save_as(raw, enforce_file_format=True)
            archive.writestr(f"DOE_JANE/{n:05d}.dcm", raw.getvalue())
    return buffer.getvalue()


def _export_zip(world, format: str) -> zipfile.ZipFile:
    export = consensus_services.export_request(project=world.project, actor=world.lead, format=format, queue=False)
    export = consensus_services.export_execute(export_id=export.pk)
    assert export.status == JobStatus.DONE, export.error
    with export.file.open("rb") as handle:
        return zipfile.ZipFile(io.BytesIO(handle.read()))


def test_a_dicom_study_goes_out_as_a_two_channel_nnunet_dataset_and_a_dicom_seg(tmp_path, monkeypatch):
    world = factories.make_world(raters_per_scan=2, n_annotators=2)
    world.project = services.project_update(
        project=world.project, actor=world.lead, channels=["T1w", "FLAIR"], ambiguity_threshold=1.0
    )
    job = dicom_imports.dicom_study_import(project=world.project, actor=world.lead, archive=io.BytesIO(_study_zip()))
    assert job.status == JobStatus.DONE, job.error
    scan = Scan.objects.get(project=world.project)
    flair = scan.channels.get(role="FLAIR")
    assert scan.dicom_series and flair.dicom_series

    truth = np.zeros(tuple(scan.shape), np.uint8)
    truth[4:12, 3:11, 2:6] = 1
    truth[6:9, 5:8, 3:5] = 2
    factories.submit_panel(world, scan, [truth, truth])
    for run in ConsensusRun.objects.filter(scan=scan):
        consensus_services.consensus_run_execute(run_id=run.pk)

    # nnU-Net: two channels, accepted by nnU-Net's own check; _0001 is the FLAIR as stored.
    nnunet = _export_zip(world, "nnunet")
    root = tmp_path / "nnunet"
    nnunet.extractall(root)
    (dataset,) = [p for p in root.iterdir() if p.is_dir()]
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1w", "1": "FLAIR"}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    verify_dataset_integrity(str(dataset), num_processes=1)
    (case_flair,) = dataset.glob("images*/*_0001.nii.gz")
    exported, _ = volumes.read_array(case_flair.read_bytes())
    stored, _ = volumes.read_array(flair.image.read())
    np.testing.assert_array_equal(exported, stored)

    # DICOM-SEG: checked by the export, and pointing at the slices stored at import.
    seg_zip = _export_zip(world, "dicomseg")
    (seg_name,) = [n for n in seg_zip.namelist() if n.endswith("seg.dcm")]
    seg = hd.seg.segread(io.BytesIO(seg_zip.read(seg_name)))
    with zipfile.ZipFile(scan.dicom_series.open("rb")) as stored_series:
        sources = [pydicom.dcmread(io.BytesIO(stored_series.read(n))) for n in stored_series.namelist()]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = {
        item.ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for item in derivation.SourceImageSequence
    }
    assert referenced and referenced <= {ds.SOPInstanceUID for ds in sources}
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["CSF", "Grey matter", "White matter"]
    text = b"".join(seg_zip.read(n) for n in seg_zip.namelist())
    for value in sim.FAKE_PHI.values():
        if isinstance(value, str) and len(value) >= 4:
            assert value.encode() not in text, value
