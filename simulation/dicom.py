"""SIMULATED DICOM MR studies: usable series, broken ones, and realistic (fake) PHI in the headers.

Test data for the DICOM import (``labeling/dicom.py``). Nothing here is a real patient: the
names, identifiers and dates in :data:`FAKE_PHI` are invented, and the images are small
synthetic arrays (a smooth ellipsoid "head" with a bright "lesion"), not anatomy.

Geometry follows DICOM PS3.3 C.7.6.2 (Image Plane): the voxel ``(column i, row j)`` of a
slice lies at ``ImagePositionPatient + i * PixelSpacing[1] * row_cosine + j * PixelSpacing[0]
* column_cosine`` in the patient's LPS millimetres, and the slices are stacked along the
normal ``row_cosine x column_cosine``, ``spacing`` apart. The default orientation is oblique
(rotated 12 degrees about two axes), the pixels are not square and the slices have a gap
(``SpacingBetweenSlices`` > ``SliceThickness``), so a converter that drops any of these is
caught.

Pure: numpy and pydicom, no Django. :func:`study_datasets` builds the datasets in memory;
:func:`study_write` writes them as ``.dcm`` files (names carry no PHI).

>>> study = study_datasets(shape=(8, 6, 4), broken=False)
>>> sorted({ds.SeriesDescription for ds in study})
['FLAIR AX', 'T1 MPRAGE']
>>> study[0].PatientName
'DOE^JANE^Q'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: The invented patient data every simulated study carries; the PHI test looks for each value.
FAKE_PHI = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "MRN-7734219",
    "PatientBirthDate": "19610417",
    "InstitutionName": "Saint Elsewhere General Hospital",
    "ReferringPhysicianName": "WESTPHALL^DONALD",
    "AccessionNumber": "ACC-55120931",
    "StudyDate": "20230912",
    "PrivateText": "Scanned by Dr Auschlander",
}

#: The private tag (Siemens-like creator) that carries a name; group 0x0029, block 0x10.
PRIVATE_CREATOR = "SIM PRIVATE 1.0"


def oblique_cosines(degrees: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines of an axial plane rotated about x then y by ``degrees``."""
    a = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rot = ry @ rx
    return rot @ np.array([1.0, 0.0, 0.0]), rot @ np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class SeriesSpec:
    """One series to simulate; ``expect`` is the refusal the importer should give (None: usable)."""

    description: str
    number: int
    tr: float = 2300.0
    te: float = 2.98
    ti: float | None = 900.0
    modality: str = "MR"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND")
    n_slices: int | None = None
    drop_slice: int | None = None
    burned_in: str = "NO"
    pixel_spacing: tuple[float, float] = (0.9, 1.2)
    thickness: float = 3.0
    spacing: float = 3.6
    degrees: float = 12.0
    contrast: float = 1.0
    expect: str | None = None
    #: Attributes set as given, unchecked (to simulate invalid headers), by keyword.
    extra: dict = field(default_factory=dict)


USABLE = (
    SeriesSpec("T1 MPRAGE", 2, tr=2300.0, te=2.98, ti=900.0),
    SeriesSpec("FLAIR AX", 3, tr=9000.0, te=81.0, ti=2500.0, contrast=-1.0),
)

BROKEN = (
    SeriesSpec("localizer", 1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), expect="localizer"),
    SeriesSpec("T2 AX missing slice", 4, tr=5000.0, te=95.0, ti=None, drop_slice=2, expect="missing_slices"),
    SeriesSpec("CT HEAD", 5, modality="CT", ti=None, expect="not_mr"),
    SeriesSpec("T1 MPR SAG", 6, image_type=("DERIVED", "SECONDARY", "MPR"), expect="derived"),
    SeriesSpec("T2 single", 7, tr=5000.0, te=95.0, ti=None, n_slices=1, expect="single_slice"),
    SeriesSpec("T1 screenshot", 8, burned_in="YES", expect="burned_in_annotation"),
)


def phantom(shape: tuple[int, int, int], *, contrast: float = 1.0, seed: int = 0) -> np.ndarray:
    """A smooth ellipsoid with a bright blob, uint16, indexed ``(column i, row j, slice k)``.

    ``contrast`` -1 inverts the tissue ordering (a FLAIR-like look). Deterministic per seed.
    """
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g**2 for g in grids)
    head = np.clip(1.2 - r2, 0, None)
    blob = np.exp(-(((grids[0] - 0.3) ** 2 + (grids[1] + 0.2) ** 2 + grids[2] ** 2) / 0.05))
    image = 600 + 400 * contrast * head + 900 * blob
    image = image * (r2 < 1.0)
    noise = np.random.default_rng(seed).normal(0, 5, shape)
    # A gradient along i, j and k makes every axis flip visible in a comparison.
    ramp = 3.0 * np.arange(shape[0])[:, None, None] + 2.0 * np.arange(shape[1])[None, :, None]
    ramp = ramp + 5.0 * np.arange(shape[2])[None, None, :]
    return np.clip(image + noise + ramp, 0, 4000).astype(np.uint16)


def _uid(*parts: object) -> str:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return "2.25." + str(int(digest[:30], 16))


def series_datasets(
    spec: SeriesSpec,
    *,
    shape: tuple[int, int, int] = (24, 20, 8),
    study_uid: str,
    frame_uid: str,
    seed: int = 0,
    phi: dict | None = None,
    volume: np.ndarray | None = None,
) -> list[Dataset]:
    """One series: a dataset per slice, in instance order (missing ones left out).

    ``shape`` is ``(columns, rows, slices)``. ``volume`` (same axis order, any real dtype) is
    written instead of the phantom, rounded and clipped to uint16; its shape wins.
    """
    phi = FAKE_PHI if phi is None else phi
    if volume is not None:
        shape = tuple(volume.shape)
        volume = np.clip(np.round(volume), 0, 65535).astype(np.uint16)
    n_slices = spec.n_slices or shape[2]
    if volume is None:
        volume = phantom((shape[0], shape[1], n_slices), contrast=spec.contrast, seed=seed + spec.number)
    row_cos, col_cos = oblique_cosines(spec.degrees)
    normal = np.cross(row_cos, col_cos)
    origin = np.array([-shape[0] * spec.pixel_spacing[1] / 2, -shape[1] * spec.pixel_spacing[0] / 2, -20.0])
    series_uid = _uid(study_uid, spec.number)
    out = []
    for k in range(n_slices):
        if spec.drop_slice is not None and k == spec.drop_slice:
            continue
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        sop_class = MRImageStorage if spec.modality == "MR" else CT_IMAGE_STORAGE
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPInstanceUID = _uid(series_uid, k)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SOPClassUID = sop_class
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = phi["PatientName"]
        ds.PatientID = phi["PatientID"]
        ds.PatientBirthDate = phi["PatientBirthDate"]
        ds.PatientSex = "F"
        ds.InstitutionName = phi["InstitutionName"]
        ds.InstitutionAddress = "1 Hospital Road, Boston"
        ds.ReferringPhysicianName = phi["ReferringPhysicianName"]
        ds.AccessionNumber = phi["AccessionNumber"]
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = phi["StudyDate"]
        ds.StudyTime = "101502"
        ds.StudyID = "4471"
        ds.StationName = "MRC40123"
        ds.DeviceSerialNumber = "40123"
        ds.Manufacturer = "SIMULATED"
        ds.ManufacturerModelName = "Simulator"
        ds.Modality = spec.modality
        ds.ImageType = list(spec.image_type)
        ds.SeriesDescription = spec.description
        ds.SeriesNumber = spec.number
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.BurnedInAnnotation = spec.burned_in
        ds.PatientPosition = "HFS"
        if spec.modality == "MR":
            ds.RepetitionTime = spec.tr
            ds.EchoTime = spec.te
            if spec.ti is not None:
                ds.InversionTime = spec.ti
            ds.MagneticFieldStrength = 3
            ds.ScanningSequence = "GR\\IR" if spec.ti else "SE"
            ds.SequenceVariant = "SP"
            ds.MRAcquisitionType = "2D"
        ds.SliceThickness = spec.thickness
        ds.SpacingBetweenSlices = spec.spacing
        ds.PixelSpacing = [float(spec.pixel_spacing[0]), float(spec.pixel_spacing[1])]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row_cos, *col_cos)]
        position = origin + k * spec.spacing * normal
        ds.ImagePositionPatient = [round(float(v), 6) for v in position]
        ds.SliceLocation = round(float(position @ normal), 6)
        ds.Rows, ds.Columns = shape[1], shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        # Pixel (row j, column i) is volume[i, j, k]: rows first in the stored array.
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).tobytes()
        block = ds.private_block(0x0029, PRIVATE_CREATOR, create=True)
        block.add_new(0x01, "LO", phi["PrivateText"])
        for keyword, value in spec.extra.items():  # set raw: invalid values stay invalid
            ds.add(DataElement(tag_for_keyword(keyword), dictionary_VR(keyword), value))
        out.append(ds)
    return out


def study_datasets(
    *,
    shape: tuple[int, int, int] = (24, 20, 8),
    seed: int = 0,
    broken: bool = True,
    phi: dict | None = None,
    specs: tuple[SeriesSpec, ...] | None = None,
) -> list[Dataset]:
    """Every dataset of one SIMULATED study: the usable series, and the broken ones if asked."""
    specs = specs if specs is not None else USABLE + (BROKEN if broken else ())
    study_uid = _uid("study", seed)
    frame_uid = _uid("frame", seed)
    out = []
    for spec in specs:
        out += series_datasets(spec, shape=shape, study_uid=study_uid, frame_uid=frame_uid, seed=seed, phi=phi)
    return out


def subject_study(*, seed: int = 0, contrasts: tuple[str, ...] = ("T1w", "FLAIR"), phi: dict | None = None):
    """A study of one SIMULATED subject (``simulation.simulate_subject`` on the 2 mm MNI152
    anatomy, one series per contrast, 2 mm isotropic, oblique). Returns the datasets and the
    images written, by contrast (float32 arrays indexed (column, row, slice))."""
    from .anatomy import mni152_anatomy
    from .subjects import simulate_subject

    anatomy = mni152_anatomy(resolution=2)
    study_uid, frame_uid = _uid("study", "subject", seed), _uid("frame", "subject", seed)
    datasets, images = [], {}
    for number, contrast in enumerate(contrasts, start=2):
        image = simulate_subject(anatomy, seed=seed, contrast=contrast).image
        spec = SeriesSpec(
            f"{contrast} simulated", number, pixel_spacing=(2.0, 2.0), thickness=2.0, spacing=2.0, **_TIMINGS[contrast]
        )
        datasets += series_datasets(spec, study_uid=study_uid, frame_uid=frame_uid, seed=seed, phi=phi, volume=image)
        images[contrast] = image
    return datasets, images


_TIMINGS = {
    "T1w": {"tr": 2300.0, "te": 2.98, "ti": 900.0},
    "T2w": {"tr": 5000.0, "te": 95.0, "ti": None},
    "PDw": {"tr": 3000.0, "te": 12.0, "ti": None},
    "FLAIR": {"tr": 9000.0, "te": 81.0, "ti": 2500.0},
}


def study_write(folder: str | Path, **kwargs) -> list[Path]:
    """Write :func:`study_datasets` as ``<series>/<instance>.dcm`` under ``folder``; the paths."""
    folder = Path(folder)
    paths = []
    for ds in study_datasets(**kwargs):
        path = folder / f"s{int(ds.SeriesNumber):03d}" / f"i{int(ds.InstanceNumber):04d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def spec_with(spec: SeriesSpec, **changes) -> SeriesSpec:
    """A copy of ``spec`` with some fields changed (e.g. another angle)."""
    return replace(spec, **changes)


def spec_affine_lps(spec: SeriesSpec, shape: tuple[int, int, int]) -> np.ndarray:
    """The voxel-to-LPS affine :func:`series_datasets` writes for ``spec`` and ``shape``
    ``(columns, rows, slices)``: voxel ``(i, j, k)`` at ``origin + i * PixelSpacing[1] * row +
    j * PixelSpacing[0] * column + k * spacing * normal``."""
    row_cos, col_cos = oblique_cosines(spec.degrees)
    normal = np.cross(row_cos, col_cos)
    affine = np.eye(4)
    affine[:3, 0] = row_cos * spec.pixel_spacing[1]
    affine[:3, 1] = col_cos * spec.pixel_spacing[0]
    affine[:3, 2] = normal * spec.spacing
    affine[:3, 3] = [-shape[0] * spec.pixel_spacing[1] / 2, -shape[1] * spec.pixel_spacing[0] / 2, -20.0]
    return affine


@dataclass(frozen=True)
class SessionStudy:
    """One SIMULATED session: its DICOM datasets, and per contrast the image written (indexed
    (column, row, slice)), its voxel-to-LPS affine and its series number."""

    datasets: list[Dataset]
    images: dict[str, np.ndarray]
    affines: dict[str, np.ndarray]
    numbers: dict[str, int]


def session_study(
    *,
    seed: int = 0,
    resolution: int = 2,
    contrasts: tuple[str, ...] = ("T1w", "FLAIR"),
    other_grid: tuple[str, ...] = (),
    phi: dict | None = None,
) -> SessionStudy:
    """A session of one SIMULATED subject, as :func:`subject_study` but at ``resolution`` mm (1 or
    2: the MNI152 anatomy's grid), and with the contrasts of ``other_grid`` acquired on another
    grid, as a 2-D FLAIR often is: axial (not oblique), in-plane spacing 1.2 times and slices 1.5
    times the resolution, covering the first contrast's field of view. Their image is the
    contrast simulated on the first grid, resampled (trilinear) to theirs by the world positions
    of the voxels, so both series show one head in one place."""
    from scipy import ndimage

    from .anatomy import mni152_anatomy
    from .subjects import simulate_subject

    anatomy = mni152_anatomy(resolution=resolution)
    study_uid, frame_uid = _uid("study", "session", seed, resolution), _uid("frame", "session", seed, resolution)
    datasets: list[Dataset] = []
    images, affines, numbers = {}, {}, {}
    reference: np.ndarray | None = None  # the first contrast's voxel-to-LPS affine
    for number, contrast in enumerate(contrasts, start=2):
        image = simulate_subject(anatomy, seed=seed, contrast=contrast).image
        r = float(resolution)
        spec = SeriesSpec(
            f"{contrast} simulated", number, pixel_spacing=(r, r), thickness=r, spacing=r, **_TIMINGS[contrast]
        )
        affine = spec_affine_lps(spec, image.shape)
        position = None
        if contrast in other_grid and reference is not None:
            spec = replace(spec, pixel_spacing=(1.2 * r, 1.2 * r), thickness=1.5 * r, spacing=1.5 * r, degrees=0.0)
            ref_affine = reference
            corners = np.array([[i, j, k, 1] for i in (0, image.shape[0] - 1) for j in (0, image.shape[1] - 1)
                                for k in (0, image.shape[2] - 1)], dtype=float)  # fmt: skip
            world = (ref_affine @ corners.T).T[:, :3]
            low, high = world.min(axis=0), world.max(axis=0)
            steps = np.array([spec.pixel_spacing[1], spec.pixel_spacing[0], spec.spacing])
            shape = tuple(int(n) for n in np.ceil((high - low) / steps) + 1)
            affine = spec_affine_lps(spec, shape)
            affine[:3, 3] = low
            index = np.linalg.inv(ref_affine) @ affine
            grid = np.indices(shape, dtype=float).reshape(3, -1)
            coords = index[:3, :3] @ grid + index[:3, 3:4]
            image = ndimage.map_coordinates(image, coords, order=1, cval=0.0).reshape(shape).astype(np.float32)
            position = low
        written = series_datasets(spec, study_uid=study_uid, frame_uid=frame_uid, seed=seed, phi=phi, volume=image)
        if position is not None:  # series_datasets centres its grid; this one covers the first's
            normal = affine[:3, 2] / spec.spacing
            for k, ds in enumerate(written):
                at = position + k * spec.spacing * normal
                ds.ImagePositionPatient = [round(float(v), 6) for v in at]
                ds.SliceLocation = round(float(at @ normal), 6)
        if reference is None:
            reference = affine
        datasets += written
        images[contrast] = image
        affines[contrast] = affine
        numbers[contrast] = number
    return SessionStudy(datasets=datasets, images=images, affines=affines, numbers=numbers)
