"""Tests for labeling.dicom (pure: no database). All DICOM data SIMULATED (simulation.dicom).

Kinds of test: every broken series refused with its own reason; geometry by hand on an axial
series, then against dcm2niix (an outside oracle) on an oblique series with non-square pixels
and gaps; role rules; de-identification leaves no fake-PHI byte and keeps UIDs consistent.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import logging
import warnings
import zipfile

import nibabel as nib
import numpy as np
import pytest

from labeling import dicom
from simulation import dicom as sim

SHAPE = (12, 10, 5)


def study(**kwargs):
    return dicom.series_group(sim.study_datasets(shape=SHAPE, **kwargs))


def test_each_series_gets_the_reason_it_was_built_for():
    groups = study()
    specs = {spec.description: spec for spec in sim.USABLE + sim.BROKEN}
    found = {series[0].SeriesDescription: dicom.series_check(series) for series in groups.values()}
    assert found == {name: spec.expect for name, spec in specs.items()}
    assert len(groups) == len(specs)


def test_a_nudged_slice_is_inconsistent_spacing_and_a_duplicate_is_geometry():
    series = sim.series_datasets(sim.USABLE[0], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    nudged = list(series)
    position = np.asarray(nudged[2].ImagePositionPatient, dtype=float)
    normal = np.cross(*sim.oblique_cosines())
    nudged[2].ImagePositionPatient = list(position + 0.8 * normal)
    assert dicom.series_check(nudged) == "inconsistent_spacing"
    assert "slice steps differ" in dicom.reason_text("inconsistent_spacing", nudged)
    series = sim.series_datasets(sim.USABLE[0], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    series[3].ImagePositionPatient = series[2].ImagePositionPatient
    assert dicom.series_check(series) == "inconsistent_geometry"


@pytest.mark.parametrize("tilt_degrees", [2.0, 15.0])
def test_a_gantry_tilt_is_refused(tilt_degrees):
    """Slices stacked along a tilted axis: positions move in-plane as well as along the normal."""
    series = sim.series_datasets(sim.USABLE[0], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    row_cos, col_cos = sim.oblique_cosines()
    normal = np.cross(row_cos, col_cos)
    for k, ds in enumerate(series):
        position = np.asarray(ds.ImagePositionPatient, dtype=float)
        shift = k * 3.6 * np.tan(np.deg2rad(tilt_degrees)) * col_cos
        ds.ImagePositionPatient = list(position + shift)
    assert dicom.series_check(series) == "sheared"
    expected = 4 * 3.6 * np.tan(np.deg2rad(tilt_degrees))
    assert f"{expected:.1f} mm off" in dicom.reason_text("sheared", series)
    assert np.allclose(normal @ col_cos, 0)


def test_reasons_quote_code_strings_only():
    groups = study()
    ct = next(s for s in groups.values() if s[0].SeriesDescription == "CT HEAD")
    assert dicom.reason_text("not_mr", ct) == "not an MR series (Modality CT)"
    derived = next(s for s in groups.values() if s[0].SeriesDescription == "T1 MPR SAG")
    assert "DERIVED\\SECONDARY\\MPR" in dicom.reason_text("derived", derived)
    with dicom.quiet():
        ct[0].Modality = "Dr Doe"  # invalid CS, set on purpose
    assert "Doe" not in dicom.reason_text("not_mr", ct)


def test_quiet_keeps_header_values_out_of_logs_and_warnings(caplog):
    caplog.set_level(logging.DEBUG)
    ds = sim.series_datasets(sim.USABLE[0], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds.PatientBirthDate = "DOE JANE 1961"  # invalid DA: pydicom quotes it
        with dicom.quiet():
            ds.StudyDate = "DOE JANE 1962"
    said = caplog.text + " ".join(str(w.message) for w in caught)
    assert "DOE JANE 1961" in said  # outside: quoted (the check can fail)
    assert "DOE JANE 1962" not in said


def test_malformed_headers_are_reasons_not_crashes():
    def series():
        return sim.series_datasets(sim.USABLE[0], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")

    single = series()
    for ds in single:
        ds.ImageType = "LOCALIZER"  # one value: pydicom gives a plain string
    assert dicom.series_check(single) == "localizer"
    no_rows = series()
    del no_rows[1].Rows
    assert dicom.series_check(no_rows) == "no_geometry"
    no_position = series()
    del no_position[0].ImagePositionPatient
    assert dicom.series_check(no_position) == "no_geometry"
    bare = series()[0]
    del bare.SOPClassUID
    del bare.file_meta
    clean = dicom.deidentify(bare, subject="s", offset_days=-1, secret=b"k", record=dicom.DeidRecord())
    assert clean.file_meta.MediaStorageSOPClassUID


def test_missing_slice_message_counts_them():
    groups = study()
    series = next(s for s in groups.values() if s[0].SeriesDescription == "T2 AX missing slice")
    assert dicom.reason_text("missing_slices", series).startswith("1 slice(s) missing")


def test_affine_by_hand_on_an_axial_series():
    spec = sim.spec_with(sim.USABLE[0], degrees=0.0, pixel_spacing=(0.5, 2.0), spacing=4.0)
    series = sim.series_datasets(spec, shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    affine = dicom.series_affine(series[::-1])  # order of the files does not matter
    # Row cosine +x(L), column cosine +y(P): RAS columns are -x, -y; PixelSpacing is (row, column).
    origin = series[0].ImagePositionPatient
    expected = np.array(
        [
            [-2.0, 0, 0, -origin[0]],
            [0, -0.5, 0, -origin[1]],
            [0, 0, 4.0, origin[2]],
            [0, 0, 0, 1],
        ]
    )
    np.testing.assert_allclose(affine, expected, atol=1e-6)


def test_affine_error_sees_swapped_pixel_spacing():
    spec = sim.USABLE[0]
    series = sim.series_datasets(spec, shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    right = dicom.series_affine(series)
    assert dicom.affine_error_mm(right, right, SHAPE) == pytest.approx(0.0, abs=1e-9)
    wrong = right.copy()
    wrong[:3, 0] = right[:3, 0] / 1.2 * 0.9
    wrong[:3, 1] = right[:3, 1] / 0.9 * 1.2
    assert dicom.affine_error_mm(wrong, right, SHAPE) > 1.0


@pytest.mark.parametrize("degrees", [0.0, 12.0, 35.0])
def test_dcm2niix_agrees_with_the_headers_on_oblique_non_square_gapped_series(degrees):
    """Oracle: dcm2niix. Its affine covers the same corners, and its voxels hold our pixels."""
    spec = sim.spec_with(sim.USABLE[0], degrees=degrees)
    series = sim.series_datasets(spec, shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    converted = dicom.series_convert(series)
    assert converted.affine_error_mm < 0.05
    zooms = np.sqrt((converted.affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(sorted(zooms), sorted([0.9, 1.2, 3.6]), atol=1e-4)
    ours = nib.as_closest_canonical(nib.Nifti1Image(dicom.series_volume(series), dicom.series_affine(series)))
    theirs = nib.as_closest_canonical(nib.Nifti1Image.from_bytes(gzip.decompress(converted.nifti)))
    np.testing.assert_allclose(theirs.affine, ours.affine, atol=0.05)
    np.testing.assert_array_equal(np.asarray(theirs.dataobj), np.asarray(ours.dataobj))


def test_no_converter_is_a_refusal(monkeypatch, tmp_path):
    monkeypatch.setenv("DCM2NIIX", str(tmp_path / "no-such-dcm2niix"))
    series = sim.series_datasets(sim.USABLE[0], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    with pytest.raises(dicom.DicomError) as caught:
        dicom.series_convert(series)
    assert caught.value.code == "no_converter"


def test_converted_header_text_is_empty():
    series = sim.series_datasets(sim.USABLE[1], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    header = nib.Nifti1Image.from_bytes(gzip.decompress(dicom.series_convert(series).nifti)).header
    for name in ("descrip", "aux_file", "db_name", "intent_name"):
        assert header[name].item() == b""


@pytest.mark.parametrize(
    ("description", "tr", "te", "ti", "role"),
    [
        ("T1 MPRAGE", 2300, 2.98, 900, "T1w"),
        ("FLAIR AX", 9000, 81, 2500, "FLAIR"),
        ("ax t2 tse", 5000, 95, None, "T2w"),
        ("PD ax", 3000, 15, None, "PD"),
        ("series 4", 9000, 90, 2500, "FLAIR"),
        ("series 4", 450, 10, None, "T1w"),
        ("series 4", 2000, 3, 1000, "T1w"),
        ("series 4", 5000, 100, None, "T2w"),
        ("series 4", 3000, 12, None, "PD"),
        ("series 4", 1200, 45, None, "other"),
        ("DWI b1000", None, None, None, "other"),
    ],
)
def test_role_rule(description, tr, te, ti, role):
    assert dicom.role_guess(description=description, tr=tr, te=te, ti=ti) == role


def test_roles_of_the_simulated_study():
    roles = {s[0].SeriesDescription: dicom.series_role(s) for s in study(broken=False).values()}
    assert roles == {"T1 MPRAGE": "T1w", "FLAIR AX": "FLAIR"}


def _bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_deidentify_leaves_no_fake_phi_and_keeps_uids_consistent():
    secret = b"project-secret"
    datasets = sim.study_datasets(shape=SHAPE, broken=False)
    before = [_bytes(ds) for ds in datasets]
    record = dicom.DeidRecord()
    subject = dicom.pseudonym(patient_id=sim.FAKE_PHI["PatientID"], secret=secret)
    offset = dicom.date_offset_days(patient_id=sim.FAKE_PHI["PatientID"], secret=secret)
    clean = [dicom.deidentify(ds, subject=subject, offset_days=offset, secret=secret, record=record) for ds in datasets]
    assert [_bytes(ds) for ds in datasets] == before  # inputs untouched
    for ds in clean:
        raw = _bytes(ds)
        for key, value in sim.FAKE_PHI.items():
            for form in {value, value.replace("^", " "), value.split("^")[0]}:
                assert form.encode() not in raw, key
        assert b"Elsewhere" not in raw and b"MRC40123" not in raw and b"40123" not in raw
        assert sim.PRIVATE_CREATOR.encode() not in raw
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientID == subject
    # UIDs: consistent within a series and the study, and never the original.
    groups = dicom.series_group(clean)
    assert len(groups) == 2
    assert len({ds.StudyInstanceUID for ds in clean}) == 1
    assert clean[0].StudyInstanceUID != datasets[0].StudyInstanceUID
    assert len({ds.SOPInstanceUID for ds in clean}) == len(clean)
    assert clean[0].file_meta.MediaStorageSOPInstanceUID == clean[0].SOPInstanceUID
    # Dates: shifted by the stored offset, intervals kept.
    assert -3650 <= offset <= -1
    shifted = dt.date(2023, 9, 12) + dt.timedelta(days=offset)
    assert clean[0].StudyDate == shifted.strftime("%Y%m%d")
    # The record names attributes, never values.
    summary = record.as_dict()
    assert {"PatientBirthDate", "InstitutionName", "AccessionNumber", "ReferringPhysicianName"} <= set(
        summary["removed"]
    )
    assert {"StudyInstanceUID", "PatientID"} <= set(summary["replaced"])
    assert summary["private_tags_removed"] == len(clean)
    text = repr(summary)
    assert not any(value in text for value in sim.FAKE_PHI.values())


def test_deidentified_series_still_convert_with_the_same_geometry():
    secret = b"s"
    series = sim.series_datasets(sim.USABLE[0], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    record = dicom.DeidRecord()
    clean = [dicom.deidentify(ds, subject="sub-x", offset_days=-10, secret=secret, record=record) for ds in series]
    assert dicom.series_check(clean) is None
    np.testing.assert_allclose(dicom.series_affine(clean), dicom.series_affine(series))
    assert dicom.series_convert(clean).affine_error_mm < 0.05


def test_pseudonyms_differ_between_projects_and_patients():
    a = dicom.pseudonym(patient_id="MRN-1", secret=b"a")
    assert a == dicom.pseudonym(patient_id="MRN-1", secret=b"a")
    assert a != dicom.pseudonym(patient_id="MRN-1", secret=b"b")
    assert a != dicom.pseudonym(patient_id="MRN-2", secret=b"a")
    assert "MRN" not in a


def test_deidentify_from_a_file_equals_deidentify_of_the_decoded_dataset():
    """The fast path (kept elements shared as read, not decoded) writes the same bytes as the
    decoded path (elements deep-copied), leaves no fake PHI, and the input stays as it was."""
    secret = b"k"
    series = sim.series_datasets(sim.USABLE[1], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    with dicom.quiet():
        read = [dicom.dataset_read(_bytes(ds)) for ds in series]
    before = [_bytes(ds) for ds in read]
    args = {"subject": "sub-x", "offset_days": -7, "secret": secret}
    fast = [dicom.deidentify(ds, record=dicom.DeidRecord(), **args) for ds in read]
    slow = [dicom.deidentify(ds, record=dicom.DeidRecord(), **args) for ds in series]
    assert dicom.series_encode(fast) == dicom.series_encode(slow)
    assert [_bytes(ds) for ds in read] == before
    fast[0].ImageType = ["DERIVED"]  # a change to the copy never reaches the input
    assert list(read[0].ImageType) == list(series[0].ImageType)
    encoded = b"".join(dicom.series_encode(fast))
    assert not [v for v in sim.FAKE_PHI.values() if v.encode() in encoded]


def test_header_read_stops_before_the_pixels_and_knows_an_image():
    ds = sim.series_datasets(sim.USABLE[0], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")[0]
    with dicom.quiet():
        header = dicom.header_read(io.BytesIO(_bytes(ds)))
        assert header.SeriesInstanceUID == ds.SeriesInstanceUID and "PixelData" not in header
        assert dicom.header_read(io.BytesIO(b"not dicom")) is None
        del ds.Rows
        assert dicom.header_read(io.BytesIO(_bytes(ds))) is None


def test_series_zip_and_facts_hold_no_text():
    series = sim.series_datasets(sim.USABLE[1], shape=SHAPE, study_uid="1.2.3", frame_uid="1.2.4")
    facts = dicom.series_facts(series)
    assert facts == {
        "series_number": 3,
        "slices": SHAPE[2],
        "tr": 9000.0,
        "te": 81.0,
        "ti": 2500.0,
        "field_strength": 3.0,
    }
    clean = [
        dicom.deidentify(ds, subject="sub-x", offset_days=-1, secret=b"k", record=dicom.DeidRecord()) for ds in series
    ]
    archive = zipfile.ZipFile(io.BytesIO(dicom.series_zip(dicom.series_encode(clean))))
    assert archive.namelist() == [f"{n:04d}.dcm" for n in range(1, SHAPE[2] + 1)]
    assert archive.read("0001.dcm") == dicom.series_encode(clean)[0]
