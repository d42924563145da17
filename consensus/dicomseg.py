"""DICOM-SEG export: each ground truth as a DICOM Segmentation over its de-identified MR series.

No Django here. :func:`write_dicomseg` follows the writer convention of
``consensus/exporters.py`` (``writer(root, spec, cases, progress) -> folder name``) and lays out,
per case, ``<case_id>/image/NNNN.dcm`` (the source MR series), ``<case_id>/seg.dcm`` (a BINARY
Segmentation referencing those images) and ``<case_id>/labels.nii.gz`` (the RAS+ ground truth
the SEG was made from), plus ``index.json``. :func:`verify_dicomseg` reads every SEG back with
highdicom, rebuilds the RAS+ label map from its frames, compares it voxel for voxel with
``labels.nii.gz`` and runs ``dciodvfy`` (dicom3tools) on the SEG and on one source image.

The source series is the de-identified DICOM the scan was imported from, when there is one
(``ExportCase.dicom_source``), else an MR Image Storage series generated from the reference
NIfTI. Either way the frames are placed on the label grid by :func:`frame_map`, from the
headers alone: the import reoriented the series to RAS+ without resampling, so the DICOM grid
is a permutation and flip of the RAS+ grid, and anything else (more than 0.1 mm apart) is refused.

References
----------
DICOM PS3.3 A.51 Segmentation IOD, C.8.20 Segmentation modules, C.7.6.2 Image Plane;
PS3.16 CID 7150/7151 (segmented property category and type), CID 7162 (algorithm family);
PS3.15 Annex E (zero-length Type 2 attributes); Bridge et al., Highdicom, J Digit Imaging 35
(2022) 1719-1737; dicom3tools ``dciodvfy`` (D. Clunie).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pydicom.valuerep import DSfloat

from labeling.dicom import dataset_read, quiet
from labeling.volumes import read_array

if TYPE_CHECKING:
    from consensus.exporters import ExportCase, ExportSpec

#: BINARY: one bit-packed frame per segment and source slice. LABELMAP (2024) is more compact
#: but few viewers read it yet; BINARY is what OHIF, 3D Slicer and dcmqi all read.
SEGMENTATION_TYPE = "BINARY"
TOLERANCE_MM = 0.1
SEG_SERIES_NUMBER = 900
SOFTWARE = "mriannot"

_TISSUE = Code("85756007", "SCT", "Tissue")
_ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
_ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
_SUBSTANCE = Code("91720002", "SCT", "Body Substance")

#: Label name patterns (case-insensitive, first match wins) -> (category, type), SNOMED CT.
CONCEPTS: tuple[tuple[str, Code, Code], ...] = (
    (r"lesion|hyperintens|\bwmh\b|plaque", _ABNORMAL, Code("52988006", "SCT", "Lesion")),
    (r"tumou?r|neoplasm|glioma", _ABNORMAL, Code("108369006", "SCT", "Neoplasm")),
    (r"o?edema", _ABNORMAL, Code("79654002", "SCT", "Edema")),
    (r"ha?emorrhage|bleed", _ABNORMAL, Code("50960005", "SCT", "Hemorrhage")),
    (r"necro", _ABNORMAL, Code("6574001", "SCT", "Necrosis")),
    (r"white matter|\bwm\b", _TISSUE, Code("389080008", "SCT", "White matter")),
    (r"gr[ae]y matter|\bgm\b|cortex|cortical", _TISSUE, Code("389081007", "SCT", "Gray matter")),
    (r"\bcsf\b|cerebrospinal", _SUBSTANCE, Code("65216001", "SCT", "Cerebrospinal fluid")),
    (r"ventric", _ANATOMY, Code("35764002", "SCT", "Brain ventricle")),
    (r"brain ?stem", _ANATOMY, Code("119238007", "SCT", "Brainstem")),
    (r"cerebell", _ANATOMY, Code("113305005", "SCT", "Cerebellum")),
    (r"thalam", _ANATOMY, Code("42695009", "SCT", "Thalamus")),
    (r"hippocamp", _ANATOMY, Code("5366008", "SCT", "Hippocampus")),
    (r"brain|intracranial", _ANATOMY, Code("12738006", "SCT", "Brain")),
)
#: The consensus methods by their stored names (``ConsensusRun.method``).
METHOD_NAMES = {"staple": "Multi-label STAPLE", "majority_vote": "Majority vote"}
#: Type 2 attributes of the MR Image IOD a de-identified series may lack; written zero-length
#: (PS3.15 Annex E action Z) so that the images and the SEG copying them are valid.
TYPE2_EMPTY = (
    "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "Laterality", "PositionReferenceIndicator", "ScanOptions", "MRAcquisitionType",
    "EchoTime", "EchoTrainLength", "SliceThickness", "PatientPosition",
)  # fmt: skip
_LPS = np.array([-1.0, -1.0, 1.0])


def segment_codes(name: str) -> tuple[Code, Code]:
    """The segmented property category and type for a label name (:data:`CONCEPTS`).

    >>> segment_codes("WM hyperintensities")[1].meaning
    'Lesion'
    >>> segment_codes("Grey matter")[1].value, segment_codes("Skull strip")[1].meaning
    ('389081007', 'Tissue')
    """
    for pattern, category, kind in CONCEPTS:
        if re.search(pattern, name, re.I):
            return category, kind
    return _TISSUE, _TISSUE


def uid(*parts: object) -> str:
    """A UID (``2.25.<integer>``, PS3.5 B.2) from a SHA-256 of the parts: stable across exports.

    >>> uid("a", 1) == uid("a", 1) != uid("a", 2)
    True
    """
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _text(value: str, limit: int) -> str:
    """A value for a text VR: printable ASCII without backslash, at most ``limit`` characters."""
    clean = re.sub(r"[^ -\[\]-~]", "?", value).strip()
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


# --------------------------------------------------------------------------------------
# Source series
# --------------------------------------------------------------------------------------


def series_from_zip(raw: bytes) -> list[Dataset]:
    """The de-identified slices of a ``dicom_source`` zip, Type 2 gaps filled (see :data:`TYPE2_EMPTY`).

    Raises ValueError when it holds no image, more than one series, or a slice that is not
    marked de-identified (PatientIdentityRemoved YES).
    """
    datasets = []
    with zipfile.ZipFile(io.BytesIO(raw)) as archive, quiet():
        for member in sorted(archive.namelist()):
            ds = None if member.endswith("/") else dataset_read(archive.read(member))
            if ds is not None:
                datasets.append(ds)
    if not datasets:
        raise ValueError("dicom_source holds no DICOM image")
    if len({ds.SeriesInstanceUID for ds in datasets}) != 1:
        raise ValueError("dicom_source holds more than one series")
    if any(str(ds.get("PatientIdentityRemoved", "")).upper() != "YES" for ds in datasets):
        raise ValueError("dicom_source holds a slice not marked de-identified (PatientIdentityRemoved)")
    if any(not ds.get("FrameOfReferenceUID") for ds in datasets):
        raise ValueError("dicom_source slices have no FrameOfReferenceUID")
    for ds in datasets:
        _fill_type2(ds)
    return datasets


def _fill_type2(ds: Dataset) -> None:
    for keyword in TYPE2_EMPTY:
        if keyword not in ds:
            setattr(ds, keyword, "")


def _dicom_axes(affine: np.ndarray) -> tuple[list[int], list[bool]]:
    """RAS+ array axes for DICOM columns, rows and slices (an axial reading: columns run to the
    patient's left, rows to posterior, slices to superior), and whether each runs backwards."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    axes, flips = [], []
    for world, sign in ((0, -1.0), (1, -1.0), (2, 1.0)):
        scores = np.abs(directions[world]).copy()
        scores[axes] = -1
        axis = int(np.argmax(scores))
        axes.append(axis)
        flips.append(bool(directions[world, axis] * sign < 0))
    return axes, flips


def _pixels(data: np.ndarray) -> tuple[np.ndarray, float | None, float | None]:
    """16-bit stored pixels, with the rescale slope and intercept when the image is not integer."""
    if np.issubdtype(data.dtype, np.integer) and data.size:
        low, high = int(data.min()), int(data.max())
        if low >= 0 and high <= 65535:
            return data.astype(np.uint16), None, None
        if low >= -32768 and high <= 32767:
            return data.astype(np.int16), None, None
    values = np.nan_to_num(np.asarray(data, np.float64))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    slope = float(DSfloat((high - low) / 65535 if high > low else 1.0, auto_format=True))
    intercept = float(DSfloat(low, auto_format=True))
    stored = np.clip(np.round((values - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, intercept


def _ds(values) -> list[DSfloat]:
    return [DSfloat(float(v), auto_format=True) for v in values]


def series_from_nifti(raw: bytes, *, case_id: str, role: str) -> list[Dataset]:
    """A de-identified MR Image Storage series holding a NIfTI image, one dataset per slice.

    The slices are axial-like (the voxel axis nearest superior); position, orientation and
    spacing are written in LPS so that the series' grid is the NIfTI's grid. UIDs derive from
    ``case_id`` and the image bytes; PatientID is ``case_id`` and PatientName its one family-name
    component (``case_id^``); nothing else identifies anyone. Float images are stored as 16-bit
    integers with RescaleSlope and RescaleIntercept.
    """
    data, affine = read_array(raw)
    if data.ndim != 3:
        raise ValueError(f"the reference image has shape {data.shape}; a 3-D volume is expected")
    axes, flips = _dicom_axes(affine)
    volume = np.transpose(data, axes)
    index = np.eye(4)[:, [*axes, 3]]
    for dim, flip in enumerate(flips):
        if flip:
            volume = np.flip(volume, dim)
            index[axes[dim], 3] += volume.shape[dim] - 1
            index[axes[dim], dim] = -1
    lps = np.diag([*_LPS, 1.0]) @ affine @ index
    pixels, slope, intercept = _pixels(volume)
    digest = hashlib.sha256(case_id.encode() + b"\0" + raw).hexdigest()
    common = _generated_common(lps, case_id=case_id, role=role, digest=digest, pixels=pixels)
    out = []
    for k in range(volume.shape[2]):
        ds = _generated_slice(common, lps, k, digest=digest)
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        if slope is not None:
            ds.RescaleSlope, ds.RescaleIntercept = _ds([slope, intercept])
        out.append(ds)
    return out


def _generated_common(lps: np.ndarray, *, case_id: str, role: str, digest: str, pixels: np.ndarray) -> Dataset:
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    cosines = lps[:3, :2] / spacing[:2]
    normal = np.cross(cosines[:, 0], cosines[:, 1])
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.Modality = "MR"
    ds.Manufacturer = ""
    ds.PatientName = case_id + "^"
    ds.PatientID = case_id
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "mriannot: generated from a pseudonymised NIfTI"
    ds.StudyInstanceUID = uid("study", digest)
    ds.SeriesInstanceUID = uid("series", digest)
    ds.FrameOfReferenceUID = uid("frame", digest)
    ds.SeriesNumber = 1
    ds.SeriesDescription = _text(role, 64)
    ds.ScanningSequence = "RM"
    ds.SequenceVariant = "NONE"
    ds.ImageOrientationPatient = _ds(cosines.T.ravel())
    ds.PixelSpacing = _ds([spacing[1], spacing[0]])
    ds.SliceThickness = ds.SpacingBetweenSlices = DSfloat(abs(float(lps[:3, 2] @ normal)), auto_format=True)
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = int(pixels.dtype == np.int16)
    _fill_type2(ds)
    ds.RepetitionTime = ""
    return ds


def _generated_slice(common: Dataset, lps: np.ndarray, k: int, *, digest: str) -> Dataset:
    ds = Dataset()
    ds.update(common)
    ds.SOPInstanceUID = uid("image", digest, k)
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = _ds(lps[:3, 3] + k * lps[:3, 2])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def source_series(case: ExportCase) -> list[Dataset]:
    """The case's source MR series: its ``dicom_source`` slices, else generated from images[0]."""
    if case.dicom_source is not None:
        return series_from_zip(case.dicom_source)
    role, raw = case.images[0]
    return series_from_nifti(raw, case_id=case.case_id, role=role)


# --------------------------------------------------------------------------------------
# Frames on the RAS+ grid
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameMap:
    """Where source frames lie on a RAS+ grid.

    ``axes``: the RAS+ array axis along the frames' columns, rows and slice normal; ``flips``:
    whether columns and rows run against their axis; ``slices``: each dataset's index along
    ``axes[2]``, in the order the datasets were given.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool]
    slices: tuple[int, ...]


def _plane(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    try:
        position = np.asarray(ds.ImagePositionPatient, float)
        orientation = np.asarray(ds.ImageOrientationPatient, float)
        spacing = np.asarray(ds.PixelSpacing, float)
        size = (int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError("a source slice has no ImagePositionPatient / ImageOrientationPatient / PixelSpacing") from exc
    return position, orientation, spacing, size


def frame_map(datasets: Sequence[Dataset], affine: np.ndarray, shape: tuple[int, ...]) -> FrameMap:
    """How the single-frame ``datasets`` cover the RAS+ grid (``affine``, ``shape``), from headers.

    Raises ValueError unless every source pixel centre lies within :data:`TOLERANCE_MM` of a
    distinct voxel centre and every voxel is covered (a permutation and flip of the grid).
    """
    planes = [_plane(ds) for ds in datasets]
    _, orientation, spacing, (rows, columns) = planes[0]
    for _, other_orientation, other_spacing, size in planes[1:]:
        same = np.allclose(other_orientation, orientation, atol=1e-4) and np.allclose(other_spacing, spacing, atol=1e-4)
        if not same or size != (rows, columns):
            raise ValueError("the source slices differ in orientation, pixel spacing or size")
    to_index = np.linalg.inv(affine)
    step_c = to_index[:3, :3] @ (_LPS * orientation[:3] * spacing[1])
    step_r = to_index[:3, :3] @ (_LPS * orientation[3:] * spacing[0])
    axis_c, axis_r = int(np.argmax(np.abs(step_c))), int(np.argmax(np.abs(step_r)))
    if axis_c == axis_r:
        raise ValueError("the source rows and columns run along the same axis of the label grid")
    axes = (axis_c, axis_r, 3 - axis_c - axis_r)
    if (columns, rows, len(datasets)) != tuple(shape[a] for a in axes):
        raise ValueError(
            f"the source series ({columns} columns, {rows} rows, {len(datasets)} slices) does not cover "
            f"the label grid {tuple(shape[:3])}"
        )
    slices = tuple(int(np.rint(to_index[axes[2], :3] @ (_LPS * p) + to_index[axes[2], 3])) for p, *_ in planes)
    if sorted(slices) != list(range(len(datasets))):
        raise ValueError("the source slices do not map one to one onto the label grid's slices")
    fmap = FrameMap(axes, (bool(step_c[axis_c] < 0), bool(step_r[axis_r] < 0)), slices)
    error = _corner_error_mm(planes, fmap, affine, shape)
    if error > TOLERANCE_MM:
        raise ValueError(f"the source series lies {error:.2f} mm off the label grid (tolerance {TOLERANCE_MM} mm)")
    return fmap


def _corner_error_mm(planes, fmap: FrameMap, affine: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between a frame corner's centre and the voxel it is mapped to."""
    error = 0.0
    for (position, orientation, spacing, (rows, columns)), k in zip(planes, fmap.slices, strict=True):
        for c in (0, columns - 1):
            for r in (0, rows - 1):
                world = _LPS * (position + c * spacing[1] * orientation[:3] + r * spacing[0] * orientation[3:])
                index = np.zeros(4)
                index[3] = 1
                index[fmap.axes[0]] = shape[fmap.axes[0]] - 1 - c if fmap.flips[0] else c
                index[fmap.axes[1]] = shape[fmap.axes[1]] - 1 - r if fmap.flips[1] else r
                index[fmap.axes[2]] = k
                error = max(error, float(np.linalg.norm((affine @ index)[:3] - world)))
    return error


def to_frames(labels: np.ndarray, fmap: FrameMap) -> np.ndarray:
    """The RAS+ array as source frames, shape ``(datasets, rows, columns)``, in dataset order."""
    volume = np.transpose(labels, fmap.axes)
    volume = volume[::-1] if fmap.flips[0] else volume
    volume = volume[:, ::-1] if fmap.flips[1] else volume
    return np.ascontiguousarray(volume[:, :, list(fmap.slices)].transpose(2, 1, 0))


def from_frames(frames: np.ndarray, fmap: FrameMap) -> np.ndarray:
    """The inverse of :func:`to_frames`: source frames back to the RAS+ array."""
    volume = np.empty((frames.shape[2], frames.shape[1], frames.shape[0]), frames.dtype)
    volume[:, :, list(fmap.slices)] = frames.transpose(2, 1, 0)
    volume = volume[::-1] if fmap.flips[0] else volume
    volume = volume[:, ::-1] if fmap.flips[1] else volume
    return np.ascontiguousarray(np.transpose(volume, np.argsort(fmap.axes)))


# --------------------------------------------------------------------------------------
# The Segmentation
# --------------------------------------------------------------------------------------


def segment_values(spec: ExportSpec) -> list[int]:
    """Schema values in segment order: segment ``n`` is ``segment_values(spec)[n - 1]``."""
    return sorted(v for v in spec.labels if v != 0)


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})", colour.strip())
    if not match:
        raise ValueError(f"label colour {colour!r} is not #rrggbb")
    return tuple(int(match.group(1)[i : i + 2], 16) for i in (0, 2, 4))


def _algorithm(ground_truth: dict, code_version: str) -> tuple[str, hd.AlgorithmIdentificationSequence | None]:
    """MANUAL without a consensus method; SEMIAUTOMATIC (manual raters fused) with one."""
    method = ground_truth.get("method")
    if not method:
        return "MANUAL", None
    raters = " ".join(ground_truth.get("raters") or [])
    identification = hd.AlgorithmIdentificationSequence(
        name=_text(f"{METHOD_NAMES.get(method, method)} consensus", 64),
        family=Code("123109", "DCM", "Manual Processing"),
        version=_text(code_version, 64),
        source=SOFTWARE,
        parameters={"source": str(ground_truth.get("source")), "raters": _text(raters, 4000) or "none"},
    )
    return "SEMIAUTOMATIC", identification


def segment_descriptions(spec: ExportSpec, ground_truth: dict, code_version: str) -> list[hd.seg.SegmentDescription]:
    """One description per schema label (background excepted), numbered in :func:`segment_values` order."""
    kind, identification = _algorithm(ground_truth, code_version)
    out = []
    for number, value in enumerate(segment_values(spec), start=1):
        name, colour = spec.labels[value]
        category, property_type = segment_codes(name)
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=_text(name, 64),
                segmented_property_category=category,
                segmented_property_type=property_type,
                algorithm_type=kind,
                algorithm_identification=identification,
                display_color=hd.color.CIELabColor.from_rgb(*_hex_rgb(colour)),
            )
        )
    return out


def content_description(ground_truth: dict, code_version: str) -> str:
    """ContentDescription (LO, 64): method, raters (or their count) and code version.

    >>> content_description({"method": "staple", "raters": ["r1", "r2"]}, "v1")
    'Multi-label STAPLE of r1 r2; mriannot v1'
    """
    method = ground_truth.get("method")
    raters = list(ground_truth.get("raters") or [])
    what = METHOD_NAMES.get(method, str(method)) if method else "Manual ground truth"
    text = f"{what} of {' '.join(raters)}; mriannot {code_version}"
    if len(_text(text, 1000)) > 64:
        text = f"{what} of {len(raters)} raters; mriannot {code_version}"
    return _text(text, 64)


def content_label(ground_truth: dict) -> str:
    """ContentLabel (CS, 16): the consensus method in capitals, or MANUAL."""
    method = str(ground_truth.get("method") or "manual")
    return re.sub(r"[^A-Z0-9_]", "_", method.upper())[:16]


def segmentation(
    sources: Sequence[Dataset], frames: np.ndarray, spec: ExportSpec, ground_truth: dict, code_version: str
) -> hd.seg.Segmentation:
    """A BINARY Segmentation of ``frames`` (schema values, one frame per source, same order)."""
    values = segment_values(spec)
    unknown = sorted(set(np.unique(frames).tolist()) - {0, *values})
    if unknown:
        raise ValueError(f"ground truth values {unknown} are not in the label schema {values}")
    table = np.zeros(max([*values, int(frames.max(initial=0))]) + 1, np.uint16 if len(values) > 255 else np.uint8)
    table[values] = np.arange(1, len(values) + 1)
    if not values:
        raise ValueError("the label schema has no label besides the background")
    schema = json.dumps(sorted(spec.labels.items()))
    key = (sources[0].SeriesInstanceUID, hashlib.sha256(frames.tobytes()).hexdigest(), schema, code_version)
    with quiet():  # highdicom warns with the PatientName in the text
        return _segmentation(sources, table[frames], spec, ground_truth, code_version, key)


def _segmentation(sources, pixels, spec, ground_truth, code_version, key) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=SEGMENTATION_TYPE,
        segment_descriptions=segment_descriptions(spec, ground_truth, code_version),
        series_instance_uid=uid("seg-series", *key),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uid("seg", *key),
        instance_number=1,
        manufacturer=SOFTWARE,
        manufacturer_model_name=SOFTWARE,
        software_versions=_text(code_version, 64),
        device_serial_number="0",
        content_description=content_description(ground_truth, code_version),
        content_label=content_label(ground_truth),
        series_description=_text(f"Ground truth ({content_label(ground_truth).lower()})", 64),
        omit_empty_frames=True,
    )


# --------------------------------------------------------------------------------------
# Writer and checker
# --------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", text.title()) or "Dataset"


def write_dicomseg(
    root: Path, spec: ExportSpec, cases: Sequence[ExportCase], progress: Callable[[float, str], None]
) -> str:
    """Write every case as ``<case_id>/{image/NNNN.dcm, seg.dcm, labels.nii.gz}`` plus ``index.json``.

    Returns the folder name under ``root``. Raises ValueError for a case whose source series
    does not lie on its label grid (see :func:`frame_map`) or whose labels leave the schema.
    """
    base = f"{_slug(spec.project_name)}-dicomseg"
    out = root / base
    index = {"format": "dicom-seg", "segmentation_type": SEGMENTATION_TYPE, "cases": []}
    index["segments"] = [
        {"segment_number": n, "value": v, "name": spec.labels[v][0]} for n, v in enumerate(segment_values(spec), 1)
    ]
    for i, case in enumerate(cases):
        index["cases"].append(_write_case(out / case.case_id, spec, case))
        progress((i + 1) / len(cases), f"wrote {case.case_id}")
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return base


def _write_case(folder: Path, spec: ExportSpec, case: ExportCase) -> dict:
    labels, affine = read_array(case.labels)
    sources = source_series(case)
    fmap = frame_map(sources, affine, labels.shape)
    order = np.argsort(fmap.slices)
    sources = [sources[i] for i in order]
    frames = to_frames(labels, fmap)[order]
    seg = segmentation(sources, frames, spec, case.ground_truth, spec.code_version)
    (folder / "image").mkdir(parents=True, exist_ok=True)
    for n, ds in enumerate(sources, start=1):
        ds.save_as(folder / "image" / f"{n:04d}.dcm", enforce_file_format=True)
    seg.save_as(folder / "seg.dcm", enforce_file_format=True)
    (folder / "labels.nii.gz").write_bytes(case.labels)
    return {
        "case_id": case.case_id,
        "split": case.split,
        "source": "dicom" if case.dicom_source is not None else "generated from NIfTI",
        "images": len(sources),
        "seg": f"{case.case_id}/seg.dcm",
        "labels": f"{case.case_id}/labels.nii.gz",
        "ground_truth": case.ground_truth,
    }


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """``dciodvfy``'s error and warning lines for one file. Raises FileNotFoundError without it."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        raise FileNotFoundError("dciodvfy")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=300, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return [s for s in lines if "Error" in s], [s for s in lines if "Warning" in s]


def verify_dicomseg(folder: Path, *, spec: ExportSpec) -> list[str]:
    """Re-read a DICOM-SEG export: every SEG against its images and ``labels.nii.gz``, voxel for
    voxel, and ``dciodvfy`` on every SEG and one image of each case. Returns the problems found."""
    problems = [] if shutil.which("dciodvfy") else ["dciodvfy (dicom3tools) is not installed: the SEG is unchecked"]
    cases = sorted(p.parent for p in folder.glob("*/seg.dcm"))
    if not cases:
        problems.append("no <case>/seg.dcm in the export")
    for case in cases:
        try:
            found = _verify_case(case, spec)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a problem to report, not a crash
            found = [f"cannot be read back ({type(exc).__name__}: {exc})"]
        problems += [f"{case.name}: {p}" for p in found]
        if shutil.which("dciodvfy"):
            problems += _validated(case, folder)
    return problems


def _validated(case: Path, folder: Path) -> list[str]:
    """dciodvfy's errors on the case's SEG and its first image."""
    problems = []
    for path in (case / "seg.dcm", min((case / "image").glob("*.dcm"), default=None)):
        if path is None:
            problems.append(f"{case.name}: no source image to validate")
            continue
        problems += [f"{path.relative_to(folder)}: dciodvfy: {e}" for e in dciodvfy(path)[0]]
    return problems


def _verify_case(case: Path, spec: ExportSpec) -> list[str]:
    labels, affine = read_array((case / "labels.nii.gz").read_bytes())
    images = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((case / "image").glob("*.dcm"))]
    if not images:
        return ["no source images"]
    seg = hd.seg.segread(case / "seg.dcm")
    problems = _check_references(seg, images)
    names = [str(item.SegmentLabel) for item in seg.SegmentSequence]
    values = segment_values(spec)
    if names != [_text(spec.labels[v][0], 64) for v in values]:
        problems.append(f"segments {names} differ from the schema's labels")
        return problems
    fmap = frame_map(images, affine, labels.shape)
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in images],
        combine_segments=True,
        assert_missing_frames_are_empty=True,
    )
    table = np.array([0, *values], np.int64)
    back = from_frames(table[np.asarray(frames, np.int64)], fmap)
    differ = int(np.count_nonzero(back != labels))
    if differ:
        problems.append(f"{differ} voxel(s) of the SEG differ from labels.nii.gz")
    return problems


def _check_references(seg: hd.seg.Segmentation, images: list[Dataset]) -> list[str]:
    problems = []
    first = images[0]
    if seg.StudyInstanceUID != first.StudyInstanceUID:
        problems.append("the SEG's StudyInstanceUID is not its images'")
    if seg.FrameOfReferenceUID != first.FrameOfReferenceUID:
        problems.append("the SEG's FrameOfReferenceUID is not its images'")
    known = {ds.SOPInstanceUID for ds in images}
    referenced = {sop for _, _, sop in seg.get_source_image_uids()}
    if not referenced <= known:
        problems.append(f"the SEG references {len(referenced - known)} image(s) not in image/")
    return problems
