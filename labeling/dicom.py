"""DICOM MR series: grouped, checked, de-identified, converted to NIfTI.

Pure: numpy, nibabel, pydicom and the standard library (dcm2niix runs as a subprocess on a
temporary folder this module makes and removes); no Django. The import job
(``labeling/dicom_imports.py``) stores what this module returns; :func:`import_plan` says which
series of a session become a scan and which a further channel of it.

The steps, in order:

1. :func:`series_group` groups datasets by ``SeriesInstanceUID``.
2. :func:`series_check` refuses a series that cannot make a scan, with one reason code each:
   ``not_mr`` (Modality is not MR), ``localizer`` (ImageType holds LOCALIZER), ``derived``
   (ImageType DERIVED or SECONDARY: reformats, maps, screenshots), ``burned_in_annotation``
   (BurnedInAnnotation YES: text in the pixels that no header edit removes), ``single_slice``,
   ``inconsistent_geometry`` (orientation, pixel spacing or size differ between slices),
   ``missing_slices`` (a gap between positions that is a whole multiple of the usual step),
   ``inconsistent_spacing`` (steps that differ otherwise), ``sheared`` (slices stacked off their
   normal, as a gantry tilt does: refused, since a NIfTI affine cannot hold the shear and
   dcm2niix would resample).
3. :func:`role_guess` guesses the contrast (rule in ``docs/dicom.md``).
4. :func:`deidentify` applies the Basic Application Level Confidentiality Profile (DICOM PS3.15
   Annex E) as an allow-list, with the Retain Longitudinal Temporal Information with Modified
   Dates option: the returned copy holds only the attributes in :data:`KEPT` and
   :data:`SHIFTED_DATES`; identifiers and UIDs are replaced by keyed hashes.
5. :func:`series_convert` writes the de-identified slices to a temporary folder, runs dcm2niix,
   and checks the NIfTI's affine against :func:`series_affine` (computed from the headers).

References
----------
DICOM PS3.3 C.7.6.2 Image Plane Module (geometry); PS3.15 Annex E (de-identification);
Li X et al., The first step for neuroimaging data analysis: DICOM to NIfTI conversion,
J Neurosci Methods 264 (2016) 47-56 (dcm2niix).

>>> from simulation.dicom import study_datasets
>>> groups = series_group(study_datasets(shape=(8, 6, 4)))
>>> sorted(series_check(g) or "usable" for g in groups.values())[:3]
['burned_in_annotation', 'derived', 'localizer']
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import hashlib
import hmac
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian as EXPLICIT_VR_LE
from pydicom.uid import MRImageStorage as MR_IMAGE_STORAGE

REASONS = {
    "not_mr": "not an MR series (Modality {value})",
    "localizer": "a localizer (ImageType LOCALIZER)",
    "derived": "a derived or secondary image (ImageType {value}), not an acquisition",
    "burned_in_annotation": "the pixels carry burned-in text (BurnedInAnnotation YES)",
    "single_slice": "a single slice, not a volume",
    "inconsistent_geometry": "slices differ in {value}",
    "missing_slices": "{value} slice(s) missing between the positions",
    "inconsistent_spacing": "slice steps differ: {value}",
    "no_geometry": "no ImagePositionPatient / ImageOrientationPatient / PixelSpacing",
    "sheared": "the slices are stacked {value} mm off their normal (gantry tilt): not converted",
}

#: Attributes a de-identified dataset keeps (everything else is removed, private tags too).
KEPT = (
    "SOPClassUID", "Modality", "ImageType", "SeriesNumber", "InstanceNumber", "AcquisitionNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope",
    "RescaleIntercept", "RescaleType", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle",
    "MagneticFieldStrength", "ScanningSequence", "SequenceVariant", "MRAcquisitionType",
    "Manufacturer", "PatientPosition", "BurnedInAnnotation", "PixelData",
)  # fmt: skip
_KEPT_TAGS = frozenset(tag_for_keyword(keyword) for keyword in KEPT)
#: Dates kept but shifted by the subject's offset (Modified Dates option).
SHIFTED_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
#: UIDs replaced by keyed hashes (the same input UID always gives the same output UID).
REPLACED_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
PROFILE = "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile (allow-list)"
#: What DeidentificationMethod (LO, 64 characters at most) says.
METHOD = "PS3.15 E.1 Basic Profile (allow-list); Modified Dates"
OPTIONS = ("Retain Longitudinal Temporal Information with Modified Dates Option",)
#: Profile codes recorded in the dataset (PS3.16 CID 7050): basic profile, modified dates.
METHOD_CODES = ("113100", "113107")


class DicomError(ValueError):
    """A study that cannot be read at all (not a series problem): ``code`` and message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _drop(record: logging.LogRecord) -> bool:
    return False


@contextmanager
def quiet():
    """Silence pydicom while headers are read, checked and rewritten.

    pydicom reports an invalid value by quoting it, as a warning and on its logger
    (``Invalid value for VR DA: '<value>'``), and a header value may be PHI: inside this block
    neither reaches a log or a terminal.
    """
    logger = logging.getLogger("pydicom")
    logger.addFilter(_drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.removeFilter(_drop)


def dataset_read(raw: bytes) -> Dataset | None:
    """A DICOM image dataset from a file's bytes, or None (not DICOM, or no image in it: a
    DICOMDIR, a structured report, a presentation state). Call inside :func:`quiet`."""
    try:
        ds = pydicom.dcmread(io.BytesIO(raw))
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError, AttributeError):
        return None
    if "PixelData" not in ds or not ds.get("SeriesInstanceUID"):
        return None
    return ds


def header_read(stream) -> Dataset | None:
    """A DICOM image's header from a readable, seekable stream, read up to the pixels (whatever
    follows is not read), or None (not DICOM, or not an image of a series: no Rows or no
    SeriesInstanceUID). Call inside :func:`quiet`."""
    try:
        ds = pydicom.dcmread(stream, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OSError, AttributeError):
        return None
    if "Rows" not in ds or not ds.get("SeriesInstanceUID"):
        return None
    return ds


def series_group(datasets: list[Dataset]) -> dict[str, list[Dataset]]:
    """Datasets by ``SeriesInstanceUID``, in first-seen order; a dataset without one is refused."""
    groups: dict[str, list[Dataset]] = {}
    for ds in datasets:
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise DicomError("no_series_uid", "a DICOM file has no SeriesInstanceUID")
        groups.setdefault(uid, []).append(ds)
    return groups


def _geometry(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    try:
        position = np.asarray(ds.ImagePositionPatient, dtype=float)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        spacing = np.asarray(ds.PixelSpacing, dtype=float)
    except (AttributeError, TypeError, ValueError):
        return None
    if position.shape != (3,) or orientation.shape != (6,) or spacing.shape != (2,):
        return None
    return position, orientation, spacing


def slices_sorted(series: list[Dataset]) -> tuple[list[Dataset], np.ndarray]:
    """Slices in order along the normal, and their positions along it (mm)."""
    orientation = np.asarray(series[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    along = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) @ normal for ds in series])
    order = np.argsort(along, kind="stable")
    return [series[i] for i in order], along[order]


def _image_type(ds: Dataset) -> list[str]:
    """ImageType as a list of strings (pydicom gives a single value as a plain string)."""
    value = ds.get("ImageType") or []
    return [str(value)] if isinstance(value, str | bytes) else [str(v) for v in value]


def series_check(series: list[Dataset], *, tol_mm: float = 0.05) -> str | None:
    """The reason code this series cannot make a scan, or None when it can (see the module)."""
    first = series[0]
    modality = str(first.get("Modality", ""))
    if modality != "MR":
        return "not_mr"
    image_type = [v.upper() for v in _image_type(first)]
    if "LOCALIZER" in image_type:
        return "localizer"
    if "DERIVED" in image_type or "SECONDARY" in image_type:
        return "derived"
    if any(str(ds.get("BurnedInAnnotation", "")).upper() == "YES" for ds in series):
        return "burned_in_annotation"
    if len(series) < 2:
        return "single_slice"
    geometries = [_geometry(ds) for ds in series]
    if any(g is None for g in geometries):
        return "no_geometry"
    for index in (1, 2):  # orientation, pixel spacing
        ref = geometries[0][index]
        if any(not np.allclose(g[index], ref, atol=1e-4) for g in geometries):
            return "inconsistent_geometry"
    try:
        sizes = {(int(ds.Rows), int(ds.Columns)) for ds in series}
    except (AttributeError, TypeError, ValueError):
        return "no_geometry"
    if len(sizes) > 1:
        return "inconsistent_geometry"
    if _off_normal_mm(series) > tol_mm:
        return "sheared"
    _, along = slices_sorted(series)
    steps = np.diff(along)
    if np.any(steps < tol_mm):
        return "inconsistent_geometry"  # two slices at one position
    step = float(np.min(steps))
    if np.all(np.abs(steps - step) <= tol_mm):
        return None
    multiples = steps / step
    if np.all(np.abs(multiples - np.round(multiples)) * step <= tol_mm):
        return "missing_slices"
    return "inconsistent_spacing"


def _off_normal_mm(series: list[Dataset]) -> float:
    """How far (mm) the last slice lies off the normal through the first (0 for a straight stack)."""
    ordered, _ = slices_sorted(series)
    orientation = np.asarray(ordered[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    span = np.asarray(ordered[-1].ImagePositionPatient, dtype=float) - np.asarray(
        ordered[0].ImagePositionPatient, dtype=float
    )
    return float(np.linalg.norm(span - (span @ normal) * normal))


_CODE_STRING = re.compile(r"^[A-Z0-9 _\\]{0,64}$")


def _code_string(value: str) -> str:
    """A CS value as it is, when it is one (capitals, digits, space, underscore); else not shown."""
    return value if _CODE_STRING.match(value) else "not a code string"


def reason_text(code: str, series: list[Dataset]) -> str:
    """The message for a reason code, for people; header values shown only when they are code strings."""
    first = series[0]
    value = ""
    if code == "not_mr":
        value = _code_string(str(first.get("Modality", "")))
    elif code == "derived":
        value = _code_string("\\".join(_image_type(first)))
    elif code == "missing_slices":
        _, along = slices_sorted(series)
        steps = np.diff(along)
        value = str(round(float(np.sum(steps / steps.min() - 1))))
    elif code == "inconsistent_spacing":
        _, along = slices_sorted(series)
        value = ", ".join(f"{s:.2f}" for s in sorted(set(np.round(np.diff(along), 2))))
    elif code == "sheared":
        value = f"{_off_normal_mm(series):.1f}"
    elif code == "inconsistent_geometry":
        value = "orientation, pixel spacing, size or position"
    return REASONS[code].format(value=value)


def series_affine(series: list[Dataset]) -> np.ndarray:
    """The RAS+ affine of the stacked series, from its headers (PS3.3 C.7.6.2.1.1).

    Voxel ``(i, j, k)`` is column ``i``, row ``j`` of the ``k``-th slice in order along the
    normal; DICOM's LPS millimetres are turned to RAS by negating x and y.

    Returns
    -------
    ndarray of shape (4, 4), float64
    """
    ordered, along = slices_sorted(series)
    orientation = np.asarray(ordered[0].ImageOrientationPatient, dtype=float)
    row_cos, col_cos = orientation[:3], orientation[3:]
    normal = np.cross(row_cos, col_cos)
    spacing = np.asarray(ordered[0].PixelSpacing, dtype=float)
    step = float(np.min(np.diff(along))) if len(ordered) > 1 else float(ordered[0].get("SliceThickness", 1))
    lps = np.eye(4)
    lps[:3, 0] = row_cos * spacing[1]
    lps[:3, 1] = col_cos * spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = np.asarray(ordered[0].ImagePositionPatient, dtype=float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def series_volume(series: list[Dataset]) -> np.ndarray:
    """The stacked pixels, shape ``(columns, rows, slices)``, in :func:`series_affine`'s order."""
    ordered, _ = slices_sorted(series)
    return np.stack([np.asarray(ds.pixel_array).T for ds in ordered], axis=-1)


# --------------------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------------------

ROLES = ("T1w", "T2w", "FLAIR", "PD", "other")
_WORDS = (
    ("FLAIR", re.compile(r"flair|dark[ _-]?fluid|\bt2[ _-]?ir\b", re.I)),
    ("T1w", re.compile(r"t1|mprage|mp-rage|spgr|bravo|tfe", re.I)),
    ("T2w", re.compile(r"t2|tse|fse|space", re.I)),
    ("PD", re.compile(r"\bpd\b|proton", re.I)),
)


def role_guess(*, description: str, tr: float | None, te: float | None, ti: float | None) -> str:
    """The contrast of a series: words in the description first, then the timings (ms).

    Words (case-insensitive; the first match wins): FLAIR / dark fluid / T2 IR -> FLAIR;
    T1, MPRAGE, SPGR, BRAVO, TFE -> T1w; T2, TSE, FSE, SPACE -> T2w; PD, proton -> PD.
    Timings, when no word matches: TI >= 1500 and TE >= 60 -> FLAIR; TE <= 30 and TR <= 1000,
    or TI 300..1500 with TE <= 30 -> T1w; TE >= 60 and TR >= 2000 -> T2w; TE <= 30 and TR >= 2000
    -> PD; anything else -> other.

    >>> role_guess(description="AX FLAIR", tr=9000, te=81, ti=2500)
    'FLAIR'
    >>> role_guess(description="series 3", tr=500, te=12, ti=None)
    'T1w'
    >>> role_guess(description="", tr=None, te=None, ti=None)
    'other'
    """
    for role, pattern in _WORDS:
        if pattern.search(description or ""):
            return role
    if tr is None or te is None:
        return "other"
    if ti is not None and ti >= 1500 and te >= 60:
        return "FLAIR"
    if te <= 30 and (tr <= 1000 or (ti is not None and 300 <= ti < 1500)):
        return "T1w"
    if te >= 60 and tr >= 2000:
        return "T2w"
    if te <= 30 and tr >= 2000:
        return "PD"
    return "other"


def series_role(series: list[Dataset]) -> str:
    """:func:`role_guess` on a series' first slice."""
    first = series[0]

    def number(name: str) -> float | None:
        value = first.get(name)
        try:
            return float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    return role_guess(
        description=str(first.get("SeriesDescription", "") or ""),
        tr=number("RepetitionTime"),
        te=number("EchoTime"),
        ti=number("InversionTime"),
    )


def _number(ds: Dataset, name: str) -> float | None:
    value = ds.get(name)
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and np.isfinite(number) else None


def series_facts(series: list[Dataset]) -> dict:
    """What an import keeps of a series' headers: numbers only, never a text value.

    ``series_number``, ``slices``, the timings ``tr``, ``te``, ``ti`` (ms) and
    ``field_strength`` (T); None where a header has none (or not a number).
    """
    first = series[0]
    number = first.get("SeriesNumber")
    return {
        "series_number": int(number) if isinstance(number, int) else None,
        "slices": len(series),
        "tr": _number(first, "RepetitionTime"),
        "te": _number(first, "EchoTime"),
        "ti": _number(first, "InversionTime"),
        "field_strength": _number(first, "MagneticFieldStrength"),
    }


# --------------------------------------------------------------------------------------
# Sessions: which series become a scan, which a further channel of it
# --------------------------------------------------------------------------------------

#: What the plan does with a usable series, and why it leaves some.
PLANS = {
    "scan": "becomes a scan",
    "channel": "becomes the {role} channel of the {first} scan (series #{number})",
    "superseded": "another {role} series of this session (#{kept}, the later series number) is taken instead",
    "not_declared": "the project declares no {role} sequence (it declares {declared})",
    "no_reference": "this session has no {first} series: a scan's own image is its {first}",
}


def _shown_number(row: dict) -> str:
    number = row.get("series_number")
    return str(number) if number is not None else "?"


def _sort_key(row: dict) -> tuple[int, int]:
    number = row.get("series_number")
    return (number if isinstance(number, int) else -1, row["index"])


def import_plan(rows: list[dict], channels: list[str]) -> dict[int, dict]:
    """What becomes of each usable series (``status`` "ready"), by its ``index``.

    ``rows``: dicts with ``index``, ``status``, ``role``, ``series_number``, ``subject`` and
    ``session``. ``channels``: the project's declared sequences (the first is a scan's own
    image); empty: every usable series becomes a scan of its own.

    With channels, the series of one session (same subject and session) make one scan: the
    series of the first role is the scan, the series of the other declared roles its
    channels. Two series of one role: the later series number is taken, the other
    ``superseded``; a role the project does not declare: ``not_declared``; a session without
    a series of the first role: its series are ``no_reference``.

    Returns ``{index: {"plan", "detail", "reference"}}``, ``reference`` the index of the scan's
    series for a channel (else None).

    >>> rows = [
    ...     {"index": 1, "status": "ready", "role": "T1w", "series_number": 2, "subject": "s", "session": "a"},
    ...     {"index": 2, "status": "ready", "role": "FLAIR", "series_number": 3, "subject": "s", "session": "a"},
    ...     {"index": 3, "status": "ready", "role": "FLAIR", "series_number": 5, "subject": "s", "session": "a"},
    ...     {"index": 4, "status": "ready", "role": "T2w", "series_number": 6, "subject": "s", "session": "a"},
    ... ]
    >>> {i: p["plan"] for i, p in import_plan(rows, ["T1w", "FLAIR"]).items()}
    {1: 'scan', 2: 'superseded', 3: 'channel', 4: 'not_declared'}
    """
    ready = [row for row in rows if row.get("status") == "ready"]
    if not channels:
        return {row["index"]: {"plan": "scan", "detail": PLANS["scan"], "reference": None} for row in ready}
    sessions: dict[tuple, list[dict]] = {}
    for row in ready:
        sessions.setdefault((row.get("subject"), row.get("session")), []).append(row)
    declared = ", ".join(channels)
    plan: dict[int, dict] = {}
    for members in sessions.values():
        kept: dict[str, dict] = {}
        for row in sorted(members, key=_sort_key):
            if row["role"] in channels:
                kept[row["role"]] = row  # the later series number wins
        reference = kept.get(channels[0])
        for row in members:
            role = row["role"]
            if role not in channels:
                plan[row["index"]] = {
                    "plan": "not_declared",
                    "detail": PLANS["not_declared"].format(role=role, declared=declared),
                    "reference": None,
                }
            elif reference is None:
                plan[row["index"]] = {
                    "plan": "no_reference",
                    "detail": PLANS["no_reference"].format(first=channels[0]),
                    "reference": None,
                }
            elif kept[role] is not row:
                plan[row["index"]] = {
                    "plan": "superseded",
                    "detail": PLANS["superseded"].format(role=role, kept=_shown_number(kept[role])),
                    "reference": None,
                }
            elif row is reference:
                plan[row["index"]] = {"plan": "scan", "detail": PLANS["scan"], "reference": None}
            else:
                plan[row["index"]] = {
                    "plan": "channel",
                    "detail": PLANS["channel"].format(role=role, first=channels[0], number=_shown_number(reference)),
                    "reference": reference["index"],
                }
    return plan


# --------------------------------------------------------------------------------------
# De-identification
# --------------------------------------------------------------------------------------


def pseudonym(*, patient_id: str, secret: bytes, prefix: str = "sub-") -> str:
    """The project's pseudonym of a patient: HMAC-SHA256 of the ID under the project's secret.

    >>> pseudonym(patient_id="MRN-1", secret=b"k") == pseudonym(patient_id="MRN-1", secret=b"k")
    True
    >>> pseudonym(patient_id="MRN-1", secret=b"k") != pseudonym(patient_id="MRN-1", secret=b"j")
    True
    """
    digest = hmac.new(secret, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return prefix + digest[:16]


def uid_replace(uid: str, *, secret: bytes) -> str:
    """A new UID (``2.25.<integer>``, PS3.5 B.2) keyed by the secret: the same for the same UID."""
    digest = hmac.new(secret, b"uid:" + uid.encode("ascii", "replace"), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def date_offset_days(*, patient_id: str, secret: bytes, span: int = 3650) -> int:
    """A patient's date shift, in days, -span..-1 (keyed, so one patient always gets one shift)."""
    digest = hmac.new(secret, b"date:" + patient_id.encode("utf-8"), hashlib.sha256).digest()
    return -1 - int.from_bytes(digest[:4], "big") % span


@dataclass
class DeidRecord:
    """What de-identification did, by attribute name, never by value."""

    profile: str = PROFILE
    options: tuple[str, ...] = OPTIONS
    removed: set[str] = field(default_factory=set)
    replaced: set[str] = field(default_factory=set)
    shifted: set[str] = field(default_factory=set)
    private_removed: int = 0

    def as_dict(self) -> dict:
        return {
            "profile": self.profile,
            "options": list(self.options),
            "removed": sorted(self.removed),
            "replaced": sorted(self.replaced),
            "shifted": sorted(self.shifted),
            "private_tags_removed": self.private_removed,
        }


def _shift(value: str, days: int) -> str:
    try:
        day = dt.datetime.strptime(str(value)[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d")


def deidentify(ds: Dataset, *, subject: str, offset_days: int, secret: bytes, record: DeidRecord) -> Dataset:
    """A de-identified copy of one dataset (the input is not changed); ``record`` is updated.

    Keeps :data:`KEPT`, shifts :data:`SHIFTED_DATES` by ``offset_days``, replaces
    :data:`REPLACED_UIDS` with :func:`uid_replace`, sets PatientName and PatientID to
    ``subject``, and adds PatientIdentityRemoved YES and the method. Every other attribute,
    sequences and private tags included, is removed.

    The kept elements that are still as read from a file (immutable raw elements) are shared
    with the input, not decoded: their bytes are written back as they were read, which makes
    this and the encoding of the copy fast; the copy keeps the input's encoding. Decoded
    elements are copied.
    """
    out = Dataset()
    for tag in list(ds.keys()):
        if tag.is_private:
            if not tag.is_private_creator:
                record.private_removed += 1
            continue
        if tag in _KEPT_TAGS:
            element = ds.get_item(tag)
            out[tag] = element if isinstance(element, RawDataElement) else copy.deepcopy(element)
            continue
        keyword = keyword_for_tag(tag)
        if keyword in SHIFTED_DATES:
            setattr(out, keyword, _shift(ds[tag].value, offset_days))
            record.shifted.add(keyword)
        elif keyword in REPLACED_UIDS:
            setattr(out, keyword, uid_replace(str(ds[tag].value), secret=secret))
            record.replaced.add(keyword)
        elif keyword not in ("PatientName", "PatientID"):
            record.removed.add(keyword or str(tag))
    if None not in ds.original_encoding:
        out.set_original_encoding(*ds.original_encoding, ds.original_character_set)
    out.PatientName = subject
    out.PatientID = subject
    record.replaced.update({"PatientName", "PatientID"})
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = METHOD
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.get("SOPClassUID") or MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID", uid_replace("none", secret=secret))
    meta.TransferSyntaxUID = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) or EXPLICIT_VR_LE
    out.file_meta = meta
    return out


# --------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------


def dcm2niix_path() -> str:
    """The dcm2niix binary: ``$DCM2NIIX``, then the PATH, then next to this Python."""
    found = os.environ.get("DCM2NIIX") or shutil.which("dcm2niix")
    if not found:
        candidate = Path(sys.executable).parent / "dcm2niix"
        found = str(candidate) if candidate.exists() else None
    if not found:
        raise DicomError("no_converter", "dcm2niix is not installed (pip install dcm2niix)")
    return found


@dataclass(frozen=True)
class Converted:
    """One converted series: the NIfTI (bytes, .nii.gz, header text cleared) and its checks."""

    nifti: bytes
    affine: np.ndarray
    shape: tuple[int, ...]
    affine_error_mm: float


def affine_error_mm(converted: np.ndarray, expected: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between the grids' corner voxels, matched by world position.

    dcm2niix may flip or permute axes; both grids must still cover the same eight corners.
    """
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    a = (converted @ corners.T).T[:, :3]
    b = (expected @ corners.T).T[:, :3]
    distances = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return float(np.max(np.min(distances, axis=1)))


def series_encode(series: list[Dataset]) -> list[bytes]:
    """Each (de-identified) slice as a DICOM file's bytes, in the order given."""
    out = []
    for ds in series:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def series_zip(encoded: list[bytes]) -> bytes:
    """A zip of encoded slices under neutral names (``0001.dcm``, ...): what a scan keeps of its series."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for n, raw in enumerate(encoded, start=1):
            info = zipfile.ZipInfo(f"{n:04d}.dcm", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, raw, compresslevel=1)
    return buffer.getvalue()


def series_convert(
    series: list[Dataset],
    *,
    timeout_s: float = 120,
    tol_mm: float = 0.1,
    encoded: list[bytes] | None = None,
    compresslevel: int = 9,
) -> Converted:
    """Convert one (checked, de-identified) series to NIfTI with dcm2niix and check its geometry.

    The slices are written to a private temporary folder under neutral names; dcm2niix's
    output is re-read with nibabel, its header text fields (descrip, aux_file, db_name,
    intent_name) cleared, and its affine compared with :func:`series_affine`. A difference
    above ``tol_mm`` at any corner is refused (``geometry_mismatch``). ``encoded``: the
    slices already encoded (:func:`series_encode`), written as they are; ``compresslevel``:
    of the NIfTI's gzip (the importer uses 1: the scan's stored image is encoded again).
    """
    with tempfile.TemporaryDirectory(prefix="dicom-") as folder:
        source = Path(folder) / "in"
        target = Path(folder) / "out"
        source.mkdir()
        target.mkdir()
        if encoded is None:
            for n, ds in enumerate(series):
                ds.save_as(source / f"{n:05d}.dcm", enforce_file_format=True)
        else:
            for n, raw in enumerate(encoded):
                (source / f"{n:05d}.dcm").write_bytes(raw)
        command = [dcm2niix_path(), "-z", "n", "-b", "n", "-f", "series", "-o", str(target), str(source)]
        try:
            result = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DicomError("conversion_failed", "dcm2niix took too long") from exc
        except OSError as exc:  # not there, not executable
            raise DicomError("no_converter", "dcm2niix cannot be run; install it (pip install dcm2niix)") from exc
        outputs = sorted(target.glob("*.nii"))
        if result.returncode != 0 or len(outputs) != 1:
            raise DicomError("conversion_failed", f"dcm2niix made {len(outputs)} volume(s) (exit {result.returncode})")
        image = nib.load(outputs[0])
        data = np.asarray(image.dataobj)
        affine = image.affine.copy()
    if data.ndim != 3:
        raise DicomError("conversion_failed", f"dcm2niix made a {data.ndim}-D volume; one 3-D volume is expected")
    expected = series_affine(series)
    error = affine_error_mm(affine, expected, data.shape[:3])
    if error > tol_mm:
        raise DicomError("geometry_mismatch", f"dcm2niix's geometry differs from the headers by {error:.2f} mm")
    clean = nib.Nifti1Image(data, affine)
    clean.header.set_xyzt_units("mm", "sec")
    for name in ("descrip", "aux_file", "db_name", "intent_name"):
        clean.header[name] = b""
    return Converted(
        nifti=gzip.compress(clean.to_bytes(), compresslevel=compresslevel, mtime=0),
        affine=affine,
        shape=tuple(data.shape),
        affine_error_mm=error,
    )
