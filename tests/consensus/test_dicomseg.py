"""DICOM-SEG export: round trips on oblique grids (NIfTI-only and DICOM-sourced), the codes and
colours highdicom reads back, dciodvfy, absent labels, refused grids, a checker that catches damage.

The masks are compared twice: by :func:`verify_dicomseg` (through the headers' frame map) and by
an independent oracle, highdicom's own ``get_volume`` geometry mapped onto the NIfTI grid.
"""

from __future__ import annotations

import doctest
import io
import os
import random
import shutil
import zipfile

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from consensus import dicomseg
from consensus.exporters import ExportCase, ExportSpec
from labeling import dicom
from labeling.volumes import image_to_bytes, label_map_to_bytes, load_image, read_array
from simulation import dicom as sim

SCHEMA = {
    0: ("Background", "#000000"),
    1: ("WM hyperintensity", "#ff0000"),
    2: ("White matter", "#f0f0f0"),
    3: ("Grey matter", "#808080"),
    5: ("CSF", "#0000ff"),
    7: ("Skull strip", "#00ff00"),
}
SPEC = ExportSpec(format="dicomseg", project_name="Test project", labels=SCHEMA, code_version="abc1234")
PROVENANCE = {"source": "accepted", "method": "staple", "raters": ["r01", "r02", "r03"], "code_version": "abc1234"}


def _rotation(a: float, b: float) -> np.ndarray:
    a, b = np.deg2rad(a), np.deg2rad(b)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rz @ ry


AXES = {
    "RAS": np.eye(3),
    "PLS": np.array([[0.0, -1, 0], [-1, 0, 0], [0, 0, 1]]),  # i -> posterior, j -> left
    "LAS": np.diag([-1.0, 1, 1]),  # left-handed
}


def _affine(axes: str) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = _rotation(11, -7) @ AXES[axes] @ np.diag([0.9, 1.2, 2.5])
    affine[:3, 3] = [-6.5, 9.25, -3.0]
    return affine


def _labels(shape: tuple[int, int, int], values=(1, 3, 5, 7)) -> np.ndarray:
    """Blocks of distinct values at asymmetric places, so that any flip or transposition shows."""
    labels = np.zeros(shape, np.uint8)
    x, y, z = shape
    labels[1 : x // 2, 2 : y - 1, 1:3] = values[0]
    labels[x // 2 :, : y // 3, 2:] = values[1]
    labels[2:4, y // 2 :, z - 2 :] = values[2]
    labels[x - 2, y - 1, 0] = values[3]
    return labels


def _case(case_id: str, image: bytes, labels: bytes, *, dicom_source: bytes | None = None, **changes) -> ExportCase:
    return ExportCase(
        case_id=case_id,
        split="train",
        images=(("T1w", image),),
        labels=labels,
        ground_truth=changes.get("ground_truth", PROVENANCE),
        agreement={},
        dicom_source=dicom_source,
    )


def _nifti_case(axes: str = "PLS", shape=(9, 8, 5), labels: np.ndarray | None = None, label_affine=None):
    affine = _affine(axes)
    image = np.random.default_rng(0).normal(300, 40, shape).astype(np.float32)
    labels = _labels(shape) if labels is None else labels
    label_affine = affine if label_affine is None else label_affine
    return _case("sub-0001", image_to_bytes(image, affine), label_map_to_bytes(labels, label_affine)), image, labels


def _oracle(seg_path, affine: np.ndarray, shape) -> np.ndarray:
    """The RAS+ label map from highdicom's geometry of the SEG (not from dicomseg.frame_map)."""
    volume = hd.seg.segread(seg_path).get_volume(combine_segments=True)
    index = np.indices(volume.spatial_shape).reshape(3, -1)
    world = volume.get_affine("RAS") @ np.vstack([index, np.ones(index.shape[1])])
    voxel = np.linalg.inv(affine) @ world
    assert np.abs(voxel - np.rint(voxel)).max() < 1e-3
    ijk = np.rint(voxel[:3]).astype(int)
    values = np.array([0, *dicomseg.segment_values(SPEC)])[volume.array.reshape(-1).astype(int)]
    out = np.zeros(shape, np.uint8)
    inside = np.all((ijk >= 0) & (ijk < np.array(shape)[:, None]), axis=0)
    assert values[~inside].max(initial=0) == 0
    out[tuple(ijk[:, inside])] = values[inside]
    return out


def _write(tmp_path, cases, spec=SPEC):
    base = dicomseg.write_dicomseg(tmp_path, spec, cases, lambda fraction, message: None)
    return tmp_path / base


def _require_dciodvfy():
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("dciodvfy (dicom3tools) must be installed in CI")
        pytest.skip("dciodvfy (dicom3tools) is not installed")


@pytest.mark.parametrize("axes", ["RAS", "PLS", "LAS"])
def test_nifti_case_round_trips_on_an_oblique_grid(tmp_path, axes):
    case, _, labels = _nifti_case(axes)
    folder = _write(tmp_path, [case])
    np.testing.assert_array_equal(_oracle(folder / "sub-0001" / "seg.dcm", _affine(axes), labels.shape), labels)
    images = sorted((folder / "sub-0001" / "image").glob("*.dcm"))
    assert len(images) == labels.shape[int(np.argmax(np.abs(_affine(axes)[2, :3])))]
    first = pydicom.dcmread(images[0])
    assert (first.PatientName, first.PatientID, first.PatientIdentityRemoved) == ("sub-0001^", "sub-0001", "YES")
    assert np.dot(first.ImageOrientationPatient[:3], [1, 0, 0]) > 0.9  # columns run to the patient's left
    _require_dciodvfy()
    assert dicomseg.verify_dicomseg(folder, spec=SPEC) == []


def test_generated_series_holds_the_image_within_one_rescale_step(tmp_path):
    case, image, _ = _nifti_case("PLS")
    folder = _write(tmp_path, [case])
    slices = [pydicom.dcmread(p) for p in sorted((folder / "sub-0001" / "image").glob("*.dcm"))]
    volume = np.stack([ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices], -1)
    ras = nib.as_closest_canonical(nib.Nifti1Image(volume, dicom.series_affine(slices)))
    canonical = nib.as_closest_canonical(nib.Nifti1Image(image, _affine("PLS")))
    np.testing.assert_allclose(ras.affine, canonical.affine, atol=1e-4)
    step = float(slices[0].RescaleSlope)
    assert np.abs(np.asarray(ras.dataobj) - np.asarray(canonical.dataobj)).max() <= step / 2 + 1e-3


def test_segments_carry_codes_colours_and_provenance(tmp_path):
    case, _, _ = _nifti_case()
    seg = hd.seg.segread(_write(tmp_path, [case]) / "sub-0001" / "seg.dcm")
    assert seg.SegmentationType == "BINARY"
    items = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    assert [str(items[n].SegmentLabel) for n in sorted(items)] == [SCHEMA[v][0] for v in (1, 2, 3, 5, 7)]
    expected = {
        1: ("49755003", "52988006"),  # morphologically abnormal structure: lesion
        2: ("85756007", "389080008"),  # tissue: white matter
        3: ("85756007", "389081007"),  # tissue: grey matter
        4: ("91720002", "65216001"),  # body substance: CSF
        5: ("85756007", "85756007"),  # tissue: tissue (no better concept for "Skull strip")
    }
    for number, (category, kind) in expected.items():
        description = seg.get_segment_description(number)
        assert (description.segmented_property_category.value, description.segmented_property_type.value) == (
            category,
            kind,
        )
        assert description.segmented_property_type.scheme_designator == "SCT"
        colour = hd.color.CIELabColor.from_dicom_value(tuple(items[number].RecommendedDisplayCIELabValue)).to_rgb()
        hexa = SCHEMA[dicomseg.segment_values(SPEC)[number - 1]][1]
        assert np.abs(np.subtract(colour, [int(hexa[i : i + 2], 16) for i in (1, 3, 5)])).max() <= 1
        assert items[number].SegmentAlgorithmType == "SEMIAUTOMATIC"
        assert items[number].SegmentAlgorithmName == "Multi-label STAPLE consensus"
    assert seg.ContentLabel == "STAPLE"
    assert seg.ContentDescription == "Multi-label STAPLE of r01 r02 r03; mriannot abc1234"
    assert len(seg.ContentDescription) <= 64


def test_long_provenance_stays_within_vr_limits_and_manual_without_a_method(tmp_path):
    raters = [f"rater-with-a-long-pseudonym-{i}" for i in range(12)]
    case, _, _ = _nifti_case()
    case = _case("sub-0001", case.images[0][1], case.labels, ground_truth={"method": None, "raters": raters})
    seg = pydicom.dcmread(_write(tmp_path, [case], spec=SPEC) / "sub-0001" / "seg.dcm")
    assert seg.ContentDescription == "Manual ground truth of 12 raters; mriannot abc1234"
    assert seg.ContentLabel == "MANUAL"
    assert {item.SegmentAlgorithmType for item in seg.SegmentSequence} == {"MANUAL"}
    assert dicomseg.content_description({"method": "staple", "raters": raters}, "x" * 80).endswith("...")
    assert len(dicomseg.content_description({"method": "staple", "raters": raters}, "x" * 80)) == 64


def _simulated_dicom_case(tmp_path):
    """A de-identified oblique series with non-square pixels, converted as the import does."""
    series = sim.series_datasets(sim.USABLE[0], shape=(12, 10, 6), study_uid="1.2.3", frame_uid="1.2.4")
    record = dicom.DeidRecord()
    clean = [dicom.deidentify(ds, subject="sub-5f0c", offset_days=-30, secret=b"k", record=record) for ds in series]
    try:
        nifti = dicom.series_convert(clean).nifti
    except dicom.DicomError:  # no dcm2niix: the headers' own stack, which dcm2niix is tested to agree with
        nifti = image_to_bytes(dicom.series_volume(clean), dicom.series_affine(clean))
    volume = load_image(nifti, max_decompressed_bytes=1 << 24)
    labels = np.zeros(volume.shape, np.uint8)
    labels[volume.data > np.percentile(volume.data, 60)] = 3
    labels[volume.data > np.percentile(volume.data, 90)] = 1
    labels[0, 0, 0] = 5
    archive = io.BytesIO()
    order = list(range(len(clean)))
    random.Random(3).shuffle(order)
    with zipfile.ZipFile(archive, "w") as zf:
        for n in order:
            raw = io.BytesIO()
            clean[n].save_as(raw, enforce_file_format=True)
            zf.writestr(f"slice-{len(order) - n:03d}.dcm", raw.getvalue())
    case = _case(
        "sub-5f0c",
        volume.nifti_bytes,
        label_map_to_bytes(labels, volume.affine),
        dicom_source=archive.getvalue(),
    )
    return case, clean, labels, volume.affine


def test_dicom_sourced_case_references_the_source_slices_and_round_trips(tmp_path):
    case, clean, labels, affine = _simulated_dicom_case(tmp_path)
    folder = _write(tmp_path, [case])
    seg_path = folder / "sub-5f0c" / "seg.dcm"
    seg = hd.seg.segread(seg_path)
    written = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, (folder / "sub-5f0c" / "image").glob("*.dcm"))}
    assert set(written) == {ds.SOPInstanceUID for ds in clean}
    assert {sop for _, _, sop in seg.get_source_image_uids()} <= set(written)
    assert seg.StudyInstanceUID == clean[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == clean[0].FrameOfReferenceUID
    for ds in clean:
        assert written[ds.SOPInstanceUID].PixelData == ds.PixelData
        assert written[ds.SOPInstanceUID].ImagePositionPatient == ds.ImagePositionPatient
    np.testing.assert_array_equal(_oracle(seg_path, affine, labels.shape), labels)
    _require_dciodvfy()
    assert dicomseg.verify_dicomseg(folder, spec=SPEC) == []


def test_dciodvfy_finds_no_error_in_the_seg_or_the_images(tmp_path):
    _require_dciodvfy()
    nifti_case, _, _ = _nifti_case("LAS")
    dicom_case, _, _, _ = _simulated_dicom_case(tmp_path)
    folder = _write(tmp_path, [nifti_case, dicom_case])
    for case in ("sub-0001", "sub-5f0c"):
        for path in (folder / case / "seg.dcm", folder / case / "image" / "0001.dcm"):
            errors, _ = dicomseg.dciodvfy(path)
            assert errors == [], (path, errors)


def test_labels_absent_from_the_ground_truth_are_listed_without_frames(tmp_path):
    case, _, _ = _nifti_case()
    folder = _write(tmp_path, [case])
    seg = hd.seg.segread(folder / "sub-0001" / "seg.dcm")
    assert seg.number_of_segments == 5  # every schema label, present or not
    absent = dicomseg.segment_values(SPEC).index(2) + 1
    framed = {
        int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        for item in seg.PerFrameFunctionalGroupsSequence
    }
    assert absent not in framed and framed == {1, 3, 4, 5}
    _require_dciodvfy()
    assert dicomseg.verify_dicomseg(folder, spec=SPEC) == []


def test_an_empty_ground_truth_still_makes_a_valid_seg(tmp_path):
    shape = (9, 8, 5)
    case, _, _ = _nifti_case(labels=np.zeros(shape, np.uint8))
    folder = _write(tmp_path, [case])
    np.testing.assert_array_equal(_oracle(folder / "sub-0001" / "seg.dcm", _affine("PLS"), shape), 0)
    _require_dciodvfy()
    assert dicomseg.verify_dicomseg(folder, spec=SPEC) == []


def test_a_label_grid_off_the_image_grid_is_refused(tmp_path):
    shifted = _affine("PLS")
    shifted[:3, 3] += [0.3, 0.0, 0.0]
    case, _, _ = _nifti_case(label_affine=shifted)
    with pytest.raises(ValueError, match=r"0\.30 mm off the label grid"):
        _write(tmp_path, [case])


def test_a_label_grid_of_another_shape_is_refused(tmp_path):
    case, _, _ = _nifti_case()
    small = label_map_to_bytes(np.zeros((9, 8, 4), np.uint8), _affine("PLS"))
    with pytest.raises(ValueError, match="does not cover the label grid"):
        _write(tmp_path, [_case("sub-0001", case.images[0][1], small)])


def test_values_outside_the_schema_are_refused(tmp_path):
    case, _, _ = _nifti_case(labels=_labels((9, 8, 5), values=(1, 3, 4, 7)))
    with pytest.raises(ValueError, match=r"values \[4\] are not in the label schema"):
        _write(tmp_path, [case])


def test_source_slices_not_marked_deidentified_are_refused(tmp_path):
    case, clean, _, _ = _simulated_dicom_case(tmp_path)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for n, ds in enumerate(clean):
            ds = ds.copy()
            del ds.PatientIdentityRemoved
            raw = io.BytesIO()
            ds.save_as(raw, enforce_file_format=True)
            zf.writestr(f"{n}.dcm", raw.getvalue())
    with pytest.raises(ValueError, match="not marked de-identified"):
        _write(tmp_path, [_case("sub-5f0c", case.images[0][1], case.labels, dicom_source=archive.getvalue())])


def test_the_checker_catches_a_changed_voxel_and_a_missing_validator(tmp_path, monkeypatch):
    case, _, _ = _nifti_case()
    folder = _write(tmp_path, [case])
    data, affine = read_array((folder / "sub-0001" / "labels.nii.gz").read_bytes())
    data[0, 0, 0] = 3 if data[0, 0, 0] != 3 else 0
    (folder / "sub-0001" / "labels.nii.gz").write_bytes(label_map_to_bytes(data, affine))
    monkeypatch.setattr(dicomseg.shutil, "which", lambda name: None)
    problems = dicomseg.verify_dicomseg(folder, spec=SPEC)
    assert any("dciodvfy" in p and "not installed" in p for p in problems)
    assert "sub-0001: 1 voxel(s) of the SEG differ from labels.nii.gz" in problems


def test_uids_are_stable_across_exports(tmp_path):
    case, _, _ = _nifti_case()
    first = _write(tmp_path / "a", [case]) / "sub-0001"
    second = _write(tmp_path / "b", [case]) / "sub-0001"
    for rel in ("seg.dcm", "image/0001.dcm"):
        a, b = pydicom.dcmread(first / rel), pydicom.dcmread(second / rel)
        assert (a.SOPInstanceUID, a.SeriesInstanceUID, a.StudyInstanceUID) == (
            b.SOPInstanceUID,
            b.SeriesInstanceUID,
            b.StudyInstanceUID,
        )


def test_examples_run():
    result = doctest.testmod(dicomseg, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
