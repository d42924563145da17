"""Dataset export: a round trip for each format, checks that catch a broken export, permissions."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from consensus import exporters, services
from consensus.models import ConsensusRun, Export
from labeling import services as labeling_services
from labeling.models import Scan, Split
from mriannot.jobs import JobStatus
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def project_with_truths(db):
    """Three scans (train, validation, test), each with three raters and a finished consensus."""
    world = factories.make_world(raters_per_scan=3, n_annotators=3)
    world.project.ambiguity_threshold = 1.0  # every consensus becomes the ground truth
    world.project.save()
    truth = factories.sphere_truth((24, 20, 16))
    for seed, split in enumerate([Split.TRAIN, Split.VALIDATION, Split.TEST]):
        scan = factories.add_scan(world, seed=seed, shape=(24, 20, 16), subject_id=f"REAL-NAME-{seed}")
        scan.split = split
        scan.save()
        factories.submit_panel(world, scan, [truth, np.roll(truth, 1, axis=0), truth])
    for run in ConsensusRun.objects.all():
        services.consensus_run_execute(run_id=run.pk)
    return world


def _export(world, format, **options):
    export = services.export_request(project=world.project, actor=world.lead, format=format, queue=False, **options)
    export = services.export_execute(export_id=export.pk)
    assert export.status == JobStatus.DONE, export.error
    with export.file.open("rb") as handle:
        return export, zipfile.ZipFile(io.BytesIO(handle.read()))


def _nii(zf, name):
    return nib.Nifti1Image.from_bytes(__import__("gzip").decompress(zf.read(name)))


def test_nnunet_round_trip(project_with_truths):
    _, zf = _export(project_with_truths, "nnunet", include_raters=True, include_posterior=True)
    names = zf.namelist()
    base = "Dataset500_TestProject/"
    dataset = json.loads(zf.read(base + "dataset.json"))
    assert dataset["numTraining"] == 2 and dataset["labels"] == {
        "background": 0,
        "CSF": 1,
        "Grey matter": 2,
        "White matter": 3,
    }
    assert dataset["file_ending"] == ".nii.gz" and dataset["channel_names"] == {"0": "T1w"}
    assert {base + f"imagesTr/case_00{i}_0000.nii.gz" for i in (1, 2)} <= set(names)
    assert base + "imagesTs/case_003_0000.nii.gz" in names and base + "labelsTs/case_003.nii.gz" in names
    image, label = _nii(zf, base + "imagesTr/case_001_0000.nii.gz"), _nii(zf, base + "labelsTr/case_001.nii.gz")
    assert image.shape == label.shape == (24, 20, 16)
    np.testing.assert_allclose(image.affine, label.affine)
    np.testing.assert_array_equal(np.asarray(label.dataobj), factories.sphere_truth((24, 20, 16)))
    assert (
        sum(n.startswith(base + "raters/") for n in names) == 9
        and sum(n.startswith(base + "posteriors/") for n in names) == 3
    )
    for extra in ("README.md", "datasheet.json", "agreement.csv", "MANIFEST.sha256"):
        assert base + extra in names


def test_monai_datalist_round_trip(project_with_truths, tmp_path):
    _, zf = _export(project_with_truths, "monai")
    zf.extractall(tmp_path)
    folder = tmp_path / "TestProject"
    datalist = json.loads((folder / "datalist.json").read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [1, 1, 1]
    from monai.data import load_decathlon_datalist

    items = load_decathlon_datalist(str(folder / "datalist.json"), data_list_key="validation")
    assert nib.load(items[0]["label"]).shape == nib.load(items[0]["image"]).shape


def test_bids_derivatives_round_trip(project_with_truths):
    _, zf = _export(project_with_truths, "bids", include_raters=True, include_posterior=True)
    base = "TestProject-derivatives/"
    names = set(zf.namelist())
    description = json.loads(zf.read(base + "dataset_description.json"))
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "mriannot"
    stem = base + "sub-001/anat/sub-001_space-orig"
    assert {
        f"{stem}_desc-staple_dseg.nii.gz",
        f"{stem}_desc-rater01_dseg.nii.gz",
        f"{stem}_label-CSF_desc-staple_probseg.nii.gz",
        f"{stem}_desc-preproc_T1w.nii.gz",
    } <= names
    lut = zf.read(f"{stem}_desc-staple_dseg.tsv").decode().splitlines()
    assert lut[0] == "index\tname\tabbreviation\tcolor" and lut[1].startswith("0\tbackground\t")
    assert zf.read(f"{stem}_desc-rater01_dseg.tsv") == zf.read(f"{stem}_desc-staple_dseg.tsv")
    for image in (f"{stem}_desc-preproc_T1w", f"{stem}_desc-staple_dseg", f"{stem}_label-CSF_desc-staple_probseg"):
        sidecar = json.loads(zf.read(f"{image}.json"))
        assert sidecar["SpatialReference"] in ("orig", f"bids::{stem.removeprefix(base)}_desc-preproc_T1w.nii.gz")
    assert json.loads(zf.read(f"{stem}_desc-preproc_T1w.json"))["SkullStripped"] is False
    assert zf.read(base + ".bidsignore").decode().split() == ["/datasheet.json", "/agreement.csv", "/MANIFEST.sha256"]
    assert zf.read(base + "descriptions.tsv").decode().splitlines()[1].startswith("desc-staple\t")
    assert len(description["Authors"]) == 4 and description["Authors"][0] == "lead"
    probseg = _nii(zf, f"{stem}_label-CSF_desc-staple_probseg.nii.gz")
    assert probseg.shape == (24, 20, 16) and 0 <= probseg.get_fdata().min() and probseg.get_fdata().max() <= 1
    assert probseg.header.get_xyzt_units()[0] == "mm"


def test_no_patient_identifier_leaves_and_the_datasheet_tells_the_story(project_with_truths):
    _, zf = _export(project_with_truths, "nnunet")
    for name in zf.namelist():
        assert "REAL-NAME" not in name
        if not name.endswith(".gz"):
            assert b"REAL-NAME" not in zf.read(name), name
    readme = zf.read("Dataset500_TestProject/README.md").decode()
    for heading in (
        "## Motivation",
        "## Composition",
        "## Collection and labelling",
        "## Uses",
        "## Distribution",
        "## Maintenance",
    ):
        assert heading in readme
    sheet = json.loads(zf.read("Dataset500_TestProject/datasheet.json"))
    assert sheet["raters_per_scan"] == 3 and len(sheet["raters"]) == 3
    assert sheet["per_split"] == {"train": 1, "validation": 1, "test": 1, "unassigned": 0}
    manifest = zf.read("Dataset500_TestProject/MANIFEST.sha256").decode().splitlines()
    assert len(manifest) == len(zf.namelist()) - 1


def test_verify_catches_a_broken_export(project_with_truths, tmp_path):
    _, zf = _export(project_with_truths, "nnunet")
    zf.extractall(tmp_path)
    folder = tmp_path / "Dataset500_TestProject"
    spec = exporters.ExportSpec(
        format="nnunet",
        project_name="Test project",
        labels={0: ("background", "#000000"), 1: ("CSF", "#000000"), 2: ("GM", "#000000"), 3: ("WM", "#000000")},
    )
    assert exporters.verify_export(folder, spec=spec) == []
    label = folder / "labelsTr/case_001.nii.gz"
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.full(img.shape, 7, np.uint8), img.affine), label)
    problems = exporters.verify_export(folder, spec=spec)
    assert any("sha256" in p for p in problems) and any("[7]" in p for p in problems)


def test_only_adjudicated_with_none_adjudicated_fails_clearly(project_with_truths):
    export = services.export_request(
        project=project_with_truths.project, actor=None, format="nnunet", only_adjudicated=True, queue=False
    )
    with pytest.raises(Exception, match="Nothing to export"):
        services.export_execute(export_id=export.pk)
    export.refresh_from_db()
    assert export.status == JobStatus.FAILED and "Nothing to export" in export.error and not export.file


def test_export_via_api_then_download(project_with_truths, django_capture_on_commit_callbacks):
    world = project_with_truths
    client = world.client(world.lead)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(f"/api/v1/projects/{world.project.pk}/exports/", {"format": "monai"}, format="json")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    export_id = response.json()["id"]
    assert client.get(f"/api/v1/exports/{export_id}/download/").status_code == 404  # not built yet
    services.export_execute(export_id=export_id)
    detail = client.get(f"/api/v1/exports/{export_id}/").json()
    assert detail["status"] == "done" and detail["progress"] == 1.0
    download = client.get(f"/api/v1/exports/{export_id}/download/")
    assert download.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).testzip() is None
    for user in world.annotators:
        assert world.client(user).get(f"/api/v1/exports/{export_id}/download/").status_code == 403
        assert (
            world.client(user)
            .post(f"/api/v1/projects/{world.project.pk}/exports/", {"format": "monai"}, format="json")
            .status_code
            == 403
        )
    assert world.client(world.outsider).get(f"/api/v1/exports/{export_id}/").status_code == 404


def test_management_command(project_with_truths, tmp_path):
    out = tmp_path / "export.zip"
    call_command("export_dataset", str(project_with_truths.project.pk), "--format", "nnunet", "--output", str(out))
    assert zipfile.ZipFile(out).testzip() is None
    assert Export.objects.get().status == JobStatus.DONE


SHAPE = (24, 20, 16)
LABELS = {0: ("background", "#000000"), 1: ("CSF", "#3366ff"), 2: ("Grey matter", "#999999")}


def _case(case_id, roles, split="train", seed=0):
    return exporters.ExportCase(
        case_id=case_id,
        split=split,
        images=tuple(
            (role, factories.nifti_bytes(factories.image_array(SHAPE, seed + k), factories.AFFINE))
            for k, role in enumerate(roles)
        ),
        labels=factories.nifti_bytes(factories.sphere_truth(SHAPE), factories.AFFINE),
        ground_truth={"source": "consensus"},
        agreement={},
    )


def test_two_channels_in_the_nnunet_and_monai_layouts(tmp_path):
    cases = [_case("case_001", ("T1w", "FLAIR")), _case("case_002", ("T1w", "FLAIR"), split="test", seed=5)]
    spec = exporters.ExportSpec(format="nnunet", project_name="Two", labels=LABELS, channels=("T1w", "FLAIR"))
    summary = exporters.write_export(tmp_path / "nn", spec, cases)
    folder = tmp_path / "nn" / summary["folder"]
    assert summary["channels"] == ["T1w", "FLAIR"]
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "T1w", "1": "FLAIR"}
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["case_002_0000.nii.gz", "case_002_0001.nii.gz"]
    assert exporters.verify_export(folder, spec=spec) == []
    (folder / "imagesTr/case_001_0001.nii.gz").unlink()
    problems = exporters.verify_export(folder, spec=spec)
    assert any("manifest" in p for p in problems) and any("per channel" in p for p in problems)

    spec = exporters.ExportSpec(format="monai", project_name="Two", labels=LABELS, channels=("T1w", "FLAIR"))
    folder = tmp_path / "monai" / exporters.write_export(tmp_path / "monai", spec, cases)["folder"]
    datalist = json.loads((folder / "datalist.json").read_text())
    assert datalist["training"] == [
        {"image": ["images/case_001_T1w.nii.gz", "images/case_001_FLAIR.nii.gz"], "label": "labels/case_001.nii.gz"}
    ]
    assert datalist["modality"] == {"0": "T1w", "1": "FLAIR"}
    assert exporters.verify_export(folder, spec=spec) == []
    sheet = json.loads((folder / "datasheet.json").read_text())
    assert sheet["channels"] == ["T1w", "FLAIR"] and "T1w, FLAIR (co-registered" in (folder / "README.md").read_text()


def test_cases_must_hold_the_exports_channels(tmp_path):
    spec = exporters.ExportSpec(format="nnunet", project_name="Two", labels=LABELS, channels=("T1w", "FLAIR"))
    with pytest.raises(ValueError, match="differ from the export's"):
        exporters.write_export(tmp_path, spec, [_case("case_001", ("T1w",))])
    undeclared = exporters.ExportSpec(format="nnunet", project_name="One", labels=LABELS)
    with pytest.raises(ValueError, match="different numbers of channels"):
        exporters.write_export(tmp_path, undeclared, [_case("case_001", ("T1w",)), _case("case_002", ("T1w", "T2w"))])
    mixed = [_case("case_001", ("T1w",)), _case("case_002", ("T2w",))]
    folder = tmp_path / exporters.write_export(tmp_path, undeclared, mixed)["folder"]
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "T1w/T2w"}


def test_a_scan_missing_a_declared_channel_is_left_out_and_named(project_with_truths):
    world = project_with_truths
    labeling_services.project_update(project=world.project, actor=world.lead, channels=["T1w", "FLAIR"])
    scans = list(Scan.objects.filter(project=world.project).order_by("id"))
    for seed, scan in enumerate(scans[:2]):
        flair = factories.nifti_bytes(factories.image_array(SHAPE, seed=20 + seed), factories.AFFINE)
        labeling_services.scan_channel_add(scan=scan, actor=world.lead, raw=flair, role="FLAIR")
    export, zf = _export(world, "nnunet")
    base = "Dataset500_TestProject/"
    assert export.summary["cases"] == 2 and "1 left out (missing channels)" in export.message
    sheet = json.loads(zf.read(base + "datasheet.json"))
    assert sheet["excluded_scans"] == [
        {"scan": scans[2].pk, "missing_channels": ["FLAIR"], "reason": "no FLAIR channel"}
    ]
    assert "Left out: 1 scan(s)" in zf.read(base + "README.md").decode()
    assert json.loads(zf.read(base + "dataset.json"))["channel_names"] == {"0": "T1w", "1": "FLAIR"}
    assert {base + "imagesTr/case_002_0001.nii.gz", base + "imagesTr/case_001_0001.nii.gz"} <= set(zf.namelist())

    scans[0].channels.all().delete()
    scans[1].channels.all().delete()
    failed = services.export_request(project=world.project, actor=world.lead, format="bids", queue=False)
    with pytest.raises(Exception, match="lacks a declared channel"):
        services.export_execute(export_id=failed.pk)


def test_the_kernel_loads_highdicom_only_for_dicomseg(tmp_path, monkeypatch):
    probe = "import sys, consensus.exporters; print('highdicom' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout == "False\n"
    calls = []

    def write(root, spec, cases, progress):
        calls.append(("write", spec.channels, [c.dicom_source for c in cases]))
        (root / "Seg-dicomseg").mkdir()
        (root / "Seg-dicomseg" / "index.json").write_text("{}")
        return "Seg-dicomseg"

    monkeypatch.setattr("consensus.dicomseg.write_dicomseg", write)
    monkeypatch.setattr("consensus.dicomseg.verify_dicomseg", lambda folder, *, spec: calls.append("verify") or [])
    spec = exporters.ExportSpec(format="dicomseg", project_name="Seg", labels=LABELS)
    case = dataclasses.replace(_case("case_001", ("T1w",)), dicom_source=b"zip")
    summary = exporters.write_export(tmp_path, spec, [case])
    assert calls == [("write", ("T1w",), [b"zip"])]
    assert exporters.verify_export(tmp_path / summary["folder"], spec=spec) == [] and calls[-1] == "verify"
    assert {"README.md", "datasheet.json", "agreement.csv", "MANIFEST.sha256"} <= {
        p.name for p in (tmp_path / summary["folder"]).iterdir()
    }


def test_the_service_hands_the_dicom_series_to_the_dicomseg_writer(project_with_truths, monkeypatch):
    world = project_with_truths
    scan = Scan.objects.filter(project=world.project).order_by("id").first()
    scan.dicom_series.save("series.zip", ContentFile(b"de-identified slices"), save=True)
    seen = {}

    def write(root, spec, cases, progress):
        seen.update({c.case_id: c.dicom_source for c in cases})
        (root / "TestProject-dicomseg").mkdir()
        return "TestProject-dicomseg"

    monkeypatch.setattr("consensus.dicomseg.write_dicomseg", write)
    monkeypatch.setattr("consensus.dicomseg.verify_dicomseg", lambda folder, *, spec: [])
    export = Export.objects.create(project=world.project, format="dicomseg", options={}, requested_by=world.lead)
    assert services.export_execute(export_id=export.pk).status == JobStatus.DONE
    assert seen == {"case_001": b"de-identified slices", "case_002": None, "case_003": None}


def test_the_export_zip_is_stored_from_its_file_and_downloaded_as_a_stream(project_with_truths, monkeypatch):
    """The zip goes from its temporary file to storage in chunks (never read whole into memory),
    and the download streams it from storage."""
    import hashlib

    from django.http import FileResponse

    from consensus.services import exports
    from mriannot import storage

    sources = []

    def spy(*, name, source, storage=None):
        sources.append(source)
        return real(name=name, source=source, storage=storage)

    def guarded(path):
        assert path.name != "export.zip", "the export's zip was read into memory whole"
        return read_bytes(path)

    real, read_bytes = storage.file_write_from, Path.read_bytes
    monkeypatch.setattr(exports, "file_write_from", spy)
    monkeypatch.setattr(Path, "read_bytes", guarded)
    export, zf = _export(project_with_truths, "nnunet")
    (source,) = sources
    assert isinstance(source, Path) and source.name == "export.zip"
    with export.file.open("rb") as handle:
        data = handle.read()
    assert export.size == len(data) and export.sha256 == hashlib.sha256(data).hexdigest()
    assert zf.testzip() is None

    download = project_with_truths.client(project_with_truths.lead).get(f"/api/v1/exports/{export.pk}/download/")
    assert isinstance(download, FileResponse) and download.streaming
    assert b"".join(download.streaming_content) == data


def test_the_writer_holds_one_scans_volumes_at_a_time(project_with_truths, monkeypatch):
    """Each case's volumes are read from storage when its turn comes and dropped after: an export
    of 1,000 scans does not hold 1,000 scans' images, rater labels and posteriors at once."""
    import weakref

    from consensus.services import exports

    live, most, real = set(), [], exports._case_volumes

    def counted(*args, **kwargs):
        case = real(*args, **kwargs)
        live.add(case.case_id)
        most.append(len(live))
        weakref.finalize(case, live.discard, case.case_id)
        return case

    monkeypatch.setattr(exports, "_case_volumes", counted)
    _, zf = _export(project_with_truths, "nnunet", include_raters=True, include_posterior=True)
    assert len(most) == 3 and max(most) == 1
    assert sum(n.startswith("Dataset500_TestProject/raters/") for n in zf.namelist()) == 9
