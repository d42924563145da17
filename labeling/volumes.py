"""The single door to NIfTI: load, validate, reorient and write volumes.

Every NIfTI byte that enters or leaves mriannot passes through this module. It is
pure (numpy, nibabel and the standard library only): it never touches Django, a
path, the database or a request. Limits such as the largest accepted decompressed
size come in as arguments from the Django shell.

Conventions
-----------
* Arrays are in voxel order ``(X, Y, Z)`` as nibabel stores them: axis 0 is the
  fastest-varying axis on disk (NIfTI ``i``), axis 2 the slowest of the three.
* Uploaded scans and label maps are reoriented to the closest canonical
  orientation, RAS+ (exactly what :func:`nibabel.as_closest_canonical` does): the
  voxel grid is only flipped and permuted, never resampled, so every voxel keeps
  its intensity and its world position.
* World coordinates are millimetres. A header that declares metres or microns in
  ``xyzt_units`` is converted to millimetres on load; every file we write says mm.
* Untrusted input (anything a user uploads) goes through :func:`load_image` or
  :func:`load_label_map`; the only exception they raise for malformed input is
  :class:`VolumeError`. :func:`read_array` reads bytes that this module wrote.
* Every writer returns gzip-compressed NIfTI-1 bytes that depend only on its
  arguments (gzip mtime 0, no file name, fixed OS byte), so equal content gives an
  equal content hash.

References
----------
.. [1] NIfTI-1 data format, https://nifti.nimh.nih.gov/nifti-1
.. [2] NIfTI-2 data format, https://nifti.nimh.nih.gov/nifti-2
.. [3] RFC 1952, GZIP file format specification version 4.3.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Collection
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations

from mriannot.refusals import InputRefused

__all__ = [
    "ImageVolume",
    "VolumeError",
    "image_to_bytes",
    "label_map_to_bytes",
    "load_image",
    "load_label_map",
    "probability_map_to_bytes",
    "read_array",
]

# --------------------------------------------------------------------------- errors


class VolumeError(InputRefused):
    """A refused volume, with a stable machine code and a human message.

    Parameters
    ----------
    code : str
        Stable machine-readable reason, one of :data:`ERROR_CODES`.
    message : str
        What is wrong with the file and how to fix it, fit to show to the uploader.

    Examples
    --------
    >>> err = VolumeError("empty", "The file is empty (0 bytes); upload a .nii or .nii.gz file.")
    >>> err.code, str(err).startswith("The file is empty")
    ('empty', True)
    """

    @property
    def status_code(self) -> int:  # type: ignore[override]
        return 413 if self.code == "too_large" else 400

    def __repr__(self) -> str:
        return f"VolumeError({self.code!r}, {self.message!r})"


#: Every code a :class:`VolumeError` may carry.
ERROR_CODES: frozenset[str] = frozenset(
    {
        "empty",
        "not_nifti",
        "truncated",
        "corrupt",
        "too_large",
        "trailing_data",
        "bad_dimensions",
        "bad_dtype",
        "non_finite",
        "bad_affine",
        "shape_mismatch",
        "affine_mismatch",
        "labels_outside_schema",
        "non_integer_labels",
    }
)

# ------------------------------------------------------------------------ constants

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_MAGICS = (b"n+1\x00", b"ni1\x00")
_NIFTI2_MAGIC = b"n+2\x00\r\n\x1a\n"
_NIFTI1_HEADER_SIZE = 348
_NIFTI2_HEADER_SIZE = 540
_CHUNK = 1 << 18  # inflate at most 256 KiB per step
_IN_CHUNK = 1 << 18  # hand zlib at most 256 KiB of compressed input per step
# Bytes after the declared voxels that are tolerated (and dropped: never stored); more is
# refused as ``trailing_data``, after inflating at most this much past the voxels.
_TRAILING_SLACK = 1 << 16
_GZIP_LEVEL = 6
_XFORM_SCANNER = 1  # NIFTI_XFORM_SCANNER_ANAT
_AFFINE_ATOL_MM = 1e-3
_MAX_LISTED = 10
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}

_PLEASE = "upload a single 3-D brain MRI volume as a .nii or .nii.gz file"


# ----------------------------------------------------------------------- dataclass


@dataclass(frozen=True)
class ImageVolume:
    """A validated scan in the canonical RAS+ voxel grid.

    Attributes
    ----------
    data : ndarray of shape (X, Y, Z), read-only
        Voxel values in the canonical (RAS+) order. Integer images keep their
        integer dtype (native byte order); floating images, and images whose
        header applies a ``scl_slope``/``scl_inter`` scaling, are float32.
        ``read_array(nifti_bytes)[0]`` equals ``data`` exactly.
    affine : ndarray of shape (4, 4), float64, read-only
        Voxel ``(i, j, k, 1)`` to world RAS+ millimetres, for ``data``.
    spacing : tuple of 3 float
        Voxel size in millimetres along ``(X, Y, Z)`` of ``data`` (the column
        norms of ``affine``, i.e. the canonical header zooms).
    orientation : str
        Axis codes of the ORIGINAL file, e.g. ``"LPS"``; ``data`` is always RAS.
    shape : tuple of 3 int
        ``data.shape``.
    nifti_bytes : bytes
        The canonical image as deterministic ``.nii.gz`` bytes, ready to store.
    """

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    orientation: str
    shape: tuple[int, int, int]
    nifti_bytes: bytes


# ---------------------------------------------------------------- byte-level input


def _check_limit(max_decompressed_bytes: int | None) -> None:
    if max_decompressed_bytes is None:
        return
    if isinstance(max_decompressed_bytes, bool) or not isinstance(max_decompressed_bytes, int):
        raise TypeError(f"max_decompressed_bytes: expected an int, got {type(max_decompressed_bytes).__name__}")
    if max_decompressed_bytes <= 0:
        raise ValueError(f"max_decompressed_bytes: must be positive, got {max_decompressed_bytes}")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _too_large(size: int, limit: int, *, declared: bool) -> VolumeError:
    what = "The image header declares" if declared else "The file decompresses to more than"
    return VolumeError(
        "too_large",
        f"{what} {size} bytes ({_mib(size)}), over the limit of {limit} bytes "
        f"({_mib(limit)}); upload a smaller volume (crop or downsample it) or ask an "
        "administrator to raise the upload limit.",
    )


def _sniff(prefix: bytes) -> str:
    """Return ``"1"`` or ``"2"`` for a NIfTI-1/NIfTI-2 single file, else refuse."""
    if len(prefix) >= 4:
        sizes = {struct.unpack("<i", prefix[:4])[0], struct.unpack(">i", prefix[:4])[0]}
    else:
        sizes = set()
    if _NIFTI2_HEADER_SIZE in sizes:
        if len(prefix) < _NIFTI2_HEADER_SIZE:
            raise _short_header(len(prefix), _NIFTI2_HEADER_SIZE)
        if prefix[4:12] == _NIFTI2_MAGIC:
            return "2"
    if _NIFTI1_HEADER_SIZE in sizes:
        if len(prefix) < _NIFTI1_HEADER_SIZE:
            raise _short_header(len(prefix), _NIFTI1_HEADER_SIZE)
        magic = prefix[344:348]
        if magic == _NIFTI1_MAGICS[0]:
            return "1"
        if magic == _NIFTI1_MAGICS[1]:
            raise VolumeError(
                "not_nifti",
                "The file is the header half of a .hdr/.img NIfTI pair (magic 'ni1'), "
                "so its voxels are in another file; convert the pair to a single-file "
                ".nii or .nii.gz (for example with fslchfiletype or nibabel) and upload that.",
            )
    raise VolumeError(
        "not_nifti",
        "The file is not a NIfTI-1/NIfTI-2 image (bad magic bytes); " + _PLEASE + ".",
    )


def _short_header(have: int, need: int) -> VolumeError:
    return VolumeError(
        "truncated",
        f"The file ends after {have} bytes, inside the {need}-byte NIfTI header; upload the complete file.",
    )


@dataclass(frozen=True)
class _Layout:
    """What the header says about the voxel block, checked before any inflation."""

    header: nib.Nifti1Header
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    data_end: int


def _layout(prefix: bytes, *, limit: int | None, allow_4d: bool) -> _Layout:
    version = _sniff(prefix)
    header_class = nib.Nifti2Header if version == "2" else nib.Nifti1Header
    try:
        header = header_class.from_fileobj(io.BytesIO(prefix), check=True)
        dim = [int(d) for d in header["dim"]]
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on bad headers
        raise VolumeError(
            "corrupt",
            f"The NIfTI header is damaged ({type(exc).__name__}: {exc}); export the "
            "volume again from the scanner software or converter.",
        ) from None

    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise VolumeError(
            "bad_dimensions",
            f"The header's dim[0] is {ndim}, but a NIfTI image has 1 to 7 dimensions "
            "(the header is damaged); export the volume again.",
        )
    shape = tuple(dim[1 : ndim + 1])
    if any(n < 1 for n in shape):
        raise VolumeError(
            "bad_dimensions",
            f"The header declares an image of shape {shape}, with an axis of length below 1; " + _PLEASE + ".",
        )
    if ndim < 3:
        raise VolumeError(
            "bad_dimensions",
            f"The image is {ndim}-D with shape {shape}, but a 3-D volume is needed; "
            "upload the whole volume, not a single slice or a 2-D picture.",
        )
    if not allow_4d and any(n != 1 for n in shape[3:]):
        extra = int(np.prod(shape[3:]))
        raise VolumeError(
            "bad_dimensions",
            f"The image has shape {shape}: {extra} volumes (a {ndim}-D series such as "
            "fMRI, DWI or a multi-echo scan), but exactly one 3-D volume is needed; "
            "extract the volume to label (for example with fslroi) and upload it alone.",
        )

    try:
        dtype = header.get_data_dtype()
    except Exception:  # noqa: BLE001
        dtype = None
    if dtype is None or dtype.kind not in "iuf" or dtype.itemsize > 8:
        code = int(header["datatype"])
        described = f"NIfTI datatype code {code}" + (f" ({dtype})" if dtype is not None else "")
        raise VolumeError(
            "bad_dtype",
            f"The voxels are stored as {described}, which is not a plain integer or "
            "real type (complex, RGB, bit-packed and 128-bit float are not supported); "
            "convert the volume to integer or float32 voxels and upload it again.",
        )

    try:
        offset = int(header.get_data_offset())
    except (ValueError, OverflowError):
        raise VolumeError(
            "corrupt",
            f"The NIfTI header's vox_offset ({header['vox_offset']}) is not a byte "
            "position (the header is damaged); export the volume again.",
        ) from None
    if offset < 0:
        raise VolumeError(
            "corrupt",
            f"The NIfTI header's vox_offset ({offset}) is negative (the header is damaged); export the volume again.",
        )
    data_end = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if limit is not None and data_end > limit:
        raise _too_large(data_end, limit, declared=True)
    return _Layout(header=header, shape=shape, dtype=dtype, offset=offset, data_end=data_end)


class _GzipStream:
    """Inflate a gzip file (one or more members, RFC 1952) on demand, never more than asked.

    zlib is fed at most ``_IN_CHUNK`` compressed bytes at a time and asked for at most
    ``_CHUNK`` output bytes a step, so neither the input left over (which zlib copies on
    every call) nor the output of a step grows with the file. Zero bytes after the last
    member (tape padding) are allowed; anything else there is ``corrupt``. A stream that
    stops before its end marker sets :attr:`cut` (the caller says what that means).
    """

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._view = memoryview(raw)
        self._pos = 0  # the next compressed byte not yet handed to zlib
        self._tail: bytes | memoryview = b""  # handed to zlib, not yet consumed
        self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self.ended = False
        self.cut = False  # the stream stopped before its end marker
        self.members = 1  # gzip members begun so far
        self.padded = False  # zero bytes followed the last member

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; fewer only where the stream has ended."""
        parts = []
        while size > 0 and not self.ended:
            chunk = self._step(min(size, _CHUNK))
            parts.append(chunk)
            size -= len(chunk)
        return b"".join(parts)

    def readinto(self, out: memoryview) -> int:
        """Fill ``out`` from its start; returns the count, short only where the stream has ended."""
        filled = 0
        while filled < len(out) and not self.ended:
            chunk = self._step(min(len(out) - filled, _CHUNK))
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def _step(self, room: int) -> bytes:
        if not self._tail:
            self._tail = self._view[self._pos : self._pos + _IN_CHUNK]
            self._pos += len(self._tail)
        try:
            chunk = self._inflater.decompress(self._tail, room)
        except zlib.error as exc:
            raise VolumeError(
                "corrupt",
                f"The gzip compression of the file is damaged ({exc}); export the "
                "volume again, or upload it uncompressed as .nii.",
            ) from None
        self._tail = self._inflater.unconsumed_tail
        if self._inflater.eof:
            self._pos -= len(self._inflater.unused_data)
            self._tail = b""
            self._next_member()
        elif not chunk and not self._tail and self._pos >= len(self._raw):
            self.ended = self.cut = True
        return chunk

    def _next_member(self) -> None:
        if self._raw[self._pos : self._pos + 2] == _GZIP_MAGIC:
            self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            self.members += 1
            return
        rest = len(self._raw) - self._pos
        if self._raw.count(b"\x00", self._pos) != rest:
            raise VolumeError(
                "corrupt",
                f"The file has {rest} bytes of unexpected data after the end of "
                "the gzip stream; export the volume again as a plain .nii or .nii.gz file.",
            )
        self.ended = True
        self.padded = rest > 0


def _ends_early(compressed: int) -> VolumeError:
    return VolumeError(
        "truncated",
        f"The gzip stream ends early after {compressed} compressed bytes (the "
        "upload or the export was cut off); upload the complete .nii.gz file.",
    )


def _cut_short(layout: _Layout, held: int) -> VolumeError:
    return VolumeError(
        "truncated",
        f"The header declares {layout.data_end} bytes (shape {layout.shape}, "
        f"{layout.dtype.name}) but the file holds only {held}: the voxel data "
        "is cut short; upload the complete file.",
    )


def _trailing(layout: _Layout) -> VolumeError:
    return VolumeError(
        "trailing_data",
        f"The file goes on for more than {_TRAILING_SLACK} bytes after the {layout.data_end} "
        f"bytes its header declares (shape {layout.shape}, {layout.dtype.name}): data that is "
        "not part of the image (a second file appended, or a header that declares the wrong "
        "shape); " + _PLEASE + ", with nothing after the voxels.",
    )


def _inflate(raw: bytes, *, limit: int | None, allow_4d: bool) -> tuple[_Layout, np.ndarray]:
    """Inflate a ``.nii.gz`` into exactly the bytes its header declares.

    The header comes out first and is checked (a declared size over ``limit`` is refused
    before anything else is inflated); the rest is inflated straight into one buffer of
    the declared size, and at most ``_TRAILING_SLACK + 1`` bytes more are inflated to
    tell a few bytes of padding (dropped) from data appended to the image (refused).
    So memory and time never follow what the stream would inflate to, only the header.
    """
    stream = _GzipStream(raw)
    prefix = stream.read(_NIFTI2_HEADER_SIZE)
    layout = _layout(prefix, limit=limit, allow_4d=allow_4d)
    if stream.cut:
        raise _ends_early(len(raw))
    # np.empty, not bytearray: the pages are taken as they are filled, so a header that
    # declares much more than the stream holds costs only what the stream holds.
    buffer = np.empty(layout.data_end, np.uint8)
    head = min(len(prefix), layout.data_end)
    buffer[:head] = np.frombuffer(prefix, np.uint8, count=head)
    held = head + stream.readinto(memoryview(buffer)[head:])
    if stream.cut:
        raise _ends_early(len(raw))
    if held < layout.data_end:
        raise _cut_short(layout, held)
    after = len(prefix) - head
    if after <= _TRAILING_SLACK:
        after += len(stream.read(_TRAILING_SLACK + 1 - after))
        if stream.cut:
            raise _ends_early(len(raw))
    if after > _TRAILING_SLACK:
        raise _trailing(layout)
    return layout, buffer


def _split(raw: bytes, *, limit: int | None, allow_4d: bool) -> tuple[_Layout, np.ndarray]:
    """An uncompressed ``.nii``: the same checks as :func:`_inflate`, the bytes as they are."""
    if limit is not None and len(raw) > limit:
        raise _too_large(len(raw), limit, declared=False)
    layout = _layout(raw[:_NIFTI2_HEADER_SIZE], limit=limit, allow_4d=allow_4d)
    if len(raw) < layout.data_end:
        raise _cut_short(layout, len(raw))
    if len(raw) - layout.data_end > _TRAILING_SLACK:
        raise _trailing(layout)
    return layout, np.frombuffer(raw, np.uint8, count=layout.data_end)


def _decode(raw: bytes, *, limit: int | None, allow_4d: bool) -> tuple[_Layout, np.ndarray]:
    """Bytes -> (checked layout, the stored voxels: unscaled, in the file's byte order).

    The voxels are a view of the one inflated buffer (of ``raw`` itself for a plain
    ``.nii``), shaped ``layout.shape`` in the file's (Fortran) voxel order: decoding
    holds the compressed bytes and the declared bytes, nothing more.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"raw: expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if not raw:
        raise VolumeError("empty", "The file is empty (0 bytes); " + _PLEASE + ".")
    unpack = _inflate if raw[:2] == _GZIP_MAGIC else _split
    layout, buffer = unpack(raw, limit=limit, allow_4d=allow_4d)
    count = int(np.prod(layout.shape, dtype=object))
    stored = np.frombuffer(buffer, layout.dtype, count=count, offset=layout.offset)
    return layout, stored.reshape(layout.shape, order="F")


_SCALE_STEP = 1 << 20  # voxels scaled at a time: a float64 working copy of 8 MiB, not of the volume


def _voxels(layout: _Layout, stored: np.ndarray) -> np.ndarray:
    """Voxel values, scaled if the header says so, in native byte order.

    Unscaled voxels already in the output dtype are ``stored`` itself (no copy); scaled
    voxels are computed in float64 a slab at a time and kept as float32, exactly as
    ``(stored.astype(float64) * slope + inter).astype(float32)`` would.
    """
    try:
        slope, inter = layout.header.get_slope_inter()
    except Exception as exc:  # noqa: BLE001 - nibabel's HeaderDataError and friends
        raise VolumeError(
            "corrupt",
            f"The voxel data could not be read ({type(exc).__name__}: {exc}); export the volume again.",
        ) from None
    slope = 1.0 if slope is None else float(slope)
    inter = 0.0 if inter is None else float(inter)
    if slope != 1.0 or inter != 0.0:
        data = np.empty(stored.shape, np.float32, order="F")
        flat_in, flat_out = stored.reshape(-1, order="F"), data.reshape(-1, order="F")  # views: both F-contiguous
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, flat_in.size, _SCALE_STEP):
                part = flat_in[start : start + _SCALE_STEP].astype(np.float64)
                part *= slope
                part += inter
                flat_out[start : start + _SCALE_STEP] = part
        return data
    if stored.dtype.kind == "f":
        with np.errstate(over="ignore"):
            return stored.astype(np.float32, copy=False)
    return stored.astype(stored.dtype.newbyteorder("="), copy=False)


def _world_affine(header: nib.Nifti1Header) -> np.ndarray:
    """The header's best affine in millimetres, or a ``bad_affine`` refusal."""
    try:
        affine = np.array(header.get_best_affine(), dtype=np.float64)
        unit = header.get_xyzt_units()[0]
    except Exception as exc:  # noqa: BLE001
        raise VolumeError(
            "bad_affine",
            f"The header's orientation (qform/sform) cannot be read ({exc}); fix the "
            "orientation in the header (for example with fslorient) or export the "
            "volume again.",
        ) from None
    scale = _UNIT_TO_MM.get(unit, 1.0)
    if scale != 1.0:
        affine[:3, :] *= scale
    _check_affine(affine)
    return affine


def _check_affine(affine: np.ndarray) -> None:
    linear = affine[:3, :3]
    if not np.all(np.isfinite(affine)):
        problem = "contains NaN or infinite entries"
    else:
        singular = np.linalg.svd(linear, compute_uv=False)
        if singular[0] > 0 and singular[-1] > 1e-6 * singular[0]:
            return
        problem = "is not invertible (a zero voxel size or collapsed axes)"
    raise VolumeError(
        "bad_affine",
        f"The voxel-to-world matrix (qform/sform) {problem}: "
        f"{np.array2string(affine, precision=4, suppress_small=True)}; fix the voxel "
        "sizes and orientation in the header (for example with fslorient) or export "
        "the volume again.",
    )


def _canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute to the closest RAS+ grid, as :func:`nibabel.as_closest_canonical`."""
    ornt = orientations.io_orientation(affine)
    shape3 = data.shape[:3]
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine.copy()  # already canonical: no copy (callers copy when they must)
    out = np.ascontiguousarray(orientations.apply_orientation(data, ornt))
    return out, affine @ orientations.inv_ornt_aff(ornt, shape3)


_COUNT_BY_COMPARISON_BELOW = 32


def value_counts(labels: np.ndarray) -> np.ndarray:
    """Voxels per value of a uint8 label map.

    Parameters
    ----------
    labels : ndarray, uint8
        Any shape and memory order.

    Returns
    -------
    ndarray of shape (labels.max() + 1,), int64
        ``counts[v]`` is the number of voxels equal to ``v``; empty for an empty map.

    Notes
    -----
    ``np.bincount`` first converts the whole map to intp (8 bytes a voxel): ~40 ms for a
    1 mm brain. Label maps hold a few small values, so below 32 the counts come from one
    ``count_nonzero(labels == v)`` per non-zero value (~1 ms each) and the background is
    the rest.

    Examples
    --------
    >>> value_counts(np.array([[0, 2], [2, 5]], np.uint8)).tolist()
    [1, 0, 2, 0, 0, 1]
    """
    if labels.dtype != np.uint8:
        raise ValueError(f"labels: expected uint8, got {labels.dtype}")
    flat = labels.ravel(order="K")  # K: no copy of an F-ordered map
    if flat.size == 0:
        return np.zeros(0, np.int64)
    top = int(flat.max())
    if top >= _COUNT_BY_COMPARISON_BELOW:
        return np.bincount(flat, minlength=top + 1).astype(np.int64, copy=False)
    counts = np.zeros(top + 1, np.int64)
    for value in range(1, top + 1):
        counts[value] = np.count_nonzero(flat == value)
    counts[0] = flat.size - counts[1:].sum()
    return counts


def _orientation_code(affine: np.ndarray) -> str:
    return "".join(str(c) for c in nib.aff2axcodes(affine))


def _squeeze3(data: np.ndarray) -> np.ndarray:
    return data.reshape(data.shape[:3]) if data.ndim > 3 else data


def _list_values(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:_MAX_LISTED].tolist())
    more = f" and {values.size - _MAX_LISTED} more" if values.size > _MAX_LISTED else ""
    return shown + more


# ---------------------------------------------------------------------- public API


def load_image(raw: bytes, *, max_decompressed_bytes: int) -> ImageVolume:
    """Validate an uploaded scan and reorient it to the canonical RAS+ grid.

    Parameters
    ----------
    raw : bytes
        The uploaded file: single-file NIfTI-1 or NIfTI-2, plain (``.nii``) or gzip
        (``.nii.gz``, detected by the magic bytes ``1f 8b``, not by the name).
    max_decompressed_bytes : int
        Largest accepted size of the decompressed file (header + voxels). Checked
        against the header's declared size before inflating, and enforced while
        inflating in 1 MiB steps, so a gzip bomb never fills memory.

    Returns
    -------
    ImageVolume
        Canonical data (X, Y, Z), affine, spacing in mm, the original orientation
        code and the canonical ``.nii.gz`` bytes.

    Raises
    ------
    VolumeError
        ``empty``, ``not_nifti``, ``truncated``, ``corrupt``, ``too_large``,
        ``bad_dimensions`` (not 3-D; 4-D with one volume is squeezed),
        ``bad_dtype``, ``non_finite`` (NaN or infinity) or ``bad_affine``.

    Examples
    --------
    >>> lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    >>> vol = load_image(image_to_bytes(np.arange(24, dtype=np.int16).reshape(2, 3, 4), lps),
    ...                  max_decompressed_bytes=1 << 20)
    >>> vol.orientation, vol.shape, vol.spacing, int(vol.data[0, 0, 0])
    ('LPS', (2, 3, 4), (1.0, 1.0, 2.0), 20)
    """
    _check_limit(max_decompressed_bytes)
    layout, stored = _decode(raw, limit=max_decompressed_bytes, allow_4d=False)
    affine = _world_affine(layout.header)
    data = _squeeze3(_voxels(layout, stored))
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(data.size - np.count_nonzero(finite))
            raise VolumeError(
                "non_finite",
                f"The image has {bad} voxels that are NaN or infinite (out of {data.size}); "
                "replace them with a finite value (for example 0, with fslmaths -nan) "
                "and upload it again.",
            )
    canonical, canonical_affine = _canonical(data, affine)
    canonical.setflags(write=False)
    canonical_affine.setflags(write=False)
    spacing = tuple(float(z) for z in np.linalg.norm(canonical_affine[:3, :3], axis=0))
    return ImageVolume(
        data=canonical,
        affine=canonical_affine,
        spacing=spacing,  # type: ignore[arg-type]
        orientation=_orientation_code(affine),
        shape=tuple(int(n) for n in canonical.shape),  # type: ignore[arg-type]
        nifti_bytes=image_to_bytes(canonical, canonical_affine),
    )


def load_label_map(
    raw: bytes,
    *,
    reference_shape: tuple[int, int, int],
    reference_affine: np.ndarray,
    allowed_values: Collection[int],
    max_decompressed_bytes: int,
) -> np.ndarray:
    """Validate an uploaded label map against its scan and the project's schema.

    The label map may be stored in any orientation (for example the original,
    non-canonical orientation of the scan, as a viewer saves it): it is reoriented
    to canonical RAS+ first and must then land exactly on the scan's canonical grid.

    Parameters
    ----------
    raw : bytes
        Single-file NIfTI-1/NIfTI-2, plain or gzip. Any integer dtype, or a float
        dtype holding whole numbers only; a ``scl_slope``/``scl_inter`` is applied.
    reference_shape : tuple of 3 int
        The scan's canonical shape, :attr:`ImageVolume.shape`.
    reference_affine : ndarray of shape (4, 4)
        The scan's canonical affine in mm, :attr:`ImageVolume.affine`.
    allowed_values : collection of int
        Every accepted label value, each in 0..255. Background is not implied:
        include 0 if unlabelled voxels are allowed (they nearly always are).
    max_decompressed_bytes : int
        As for :func:`load_image`.

    Returns
    -------
    ndarray of shape reference_shape, uint8
        The labels in the canonical (X, Y, Z) grid of the scan (a new, writable array).

    Raises
    ------
    VolumeError
        Every code of :func:`load_image` except ``non_finite`` for NaN (which is
        ``non_integer_labels`` here), plus ``shape_mismatch``, ``affine_mismatch``,
        ``non_integer_labels`` and ``labels_outside_schema`` (negative values included).

    Examples
    --------
    >>> labels = np.zeros((2, 3, 4), np.uint8); labels[1, 2, 3] = 2
    >>> out = load_label_map(label_map_to_bytes(labels, np.eye(4)), reference_shape=(2, 3, 4),
    ...                      reference_affine=np.eye(4), allowed_values={0, 1, 2},
    ...                      max_decompressed_bytes=1 << 20)
    >>> out.dtype.name, int(out.sum())
    ('uint8', 2)
    """
    _check_limit(max_decompressed_bytes)
    reference_shape = tuple(int(n) for n in reference_shape)  # type: ignore[assignment]
    if len(reference_shape) != 3:
        raise ValueError(f"reference_shape: expected 3 axes, got {reference_shape}")
    reference_affine = np.asarray(reference_affine, dtype=np.float64)
    if reference_affine.shape != (4, 4):
        raise ValueError(f"reference_affine: expected shape (4, 4), got {reference_affine.shape}")
    allowed = np.array(sorted({int(v) for v in allowed_values}), dtype=np.int64)
    if allowed.size == 0 or allowed[0] < 0 or allowed[-1] > 255:
        raise ValueError(f"allowed_values: expected label values in 0..255, got {allowed.tolist()}")

    layout, stored = _decode(raw, limit=max_decompressed_bytes, allow_4d=False)
    affine = _world_affine(layout.header)
    data = _squeeze3(_voxels(layout, stored))

    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        whole = finite & (data == np.round(data))
        if not whole.all():
            wrong = np.unique(data[~whole])
            raise VolumeError(
                "non_integer_labels",
                f"The label map holds {int(data.size - np.count_nonzero(whole))} voxels "
                f"that are not whole numbers (values: {_list_values(wrong)}); save the "
                "segmentation as an integer label map (uint8), not as probabilities or "
                "an interpolated/resampled image.",
            )
    if data.dtype == np.uint8:
        # The common case (NiiVue and most tools save uint8): the values present, from one
        # histogram, much faster than np.isin over a 1 mm volume.
        table = np.zeros(256, bool)
        table[allowed] = True
        present = np.flatnonzero(value_counts(data))
        wanted_all = bool(table[present].all())
    else:
        wanted = np.isin(data, allowed)
        wanted_all = bool(wanted.all())
    if not wanted_all:
        if data.dtype == np.uint8:
            wanted = np.isin(data, allowed)
        found = np.unique(data[~wanted])
        if found.dtype.kind == "f":
            found = found.astype(np.int64)
        allowed_text = ", ".join(str(v) for v in allowed.tolist())
        raise VolumeError(
            "labels_outside_schema",
            f"The label map uses values that are not in the project's label schema: "
            f"{_list_values(found)} (allowed: {allowed_text}); relabel those voxels with a "
            "schema value, or ask a project lead to add the label to the schema.",
        )
    labels, labels_affine = _canonical(data.astype(np.uint8, copy=False), affine)
    if not labels.flags.writeable:  # still a view of ``raw`` (a plain .nii)
        labels = labels.copy()

    if labels.shape != reference_shape:
        raise VolumeError(
            "shape_mismatch",
            f"The label map has shape {labels.shape} (after reorientation to RAS), but "
            f"the scan has shape {reference_shape}; draw the labels on this scan, or save "
            "them on the scan's own voxel grid without cropping or resampling.",
        )
    if not np.allclose(labels_affine, reference_affine, rtol=0.0, atol=_AFFINE_ATOL_MM):
        fmt = {"precision": 3, "suppress_small": True, "max_line_width": 200}
        raise VolumeError(
            "affine_mismatch",
            "The label map lies at a different position or voxel size than the scan "
            f"(voxel-to-world matrices differ by more than {_AFFINE_ATOL_MM} mm after "
            f"reorientation to RAS): label map {np.array2string(labels_affine, **fmt)} vs "
            f"scan {np.array2string(reference_affine, **fmt)}; save the label map with "
            "the scan's header (same qform/sform), without resampling.",
        )
    return labels


def storable_as_sent(raw: bytes) -> bool:
    """Whether an accepted label-map upload is already in the form we would write.

    Call it only on bytes that :func:`load_label_map` accepted. True when ``raw`` is a
    single-member gzip NIfTI-1 whose header declares a 3-D uint8 volume in canonical
    RAS+ voxel order, millimetres, no intensity scaling, a set sform or qform, no header
    extensions and nothing after the voxels: exactly what a viewer that loaded our
    canonical scan saves. Storing such bytes as sent skips re-encoding (~40 ms for a
    1 mm map on the annotator's save path) and keeps the annotator's file bit for bit.
    Whether anything follows the voxels (a second gzip member, padding) is decided by
    inflating the file once more, a chunk at a time (~10 ms for a 1 mm map), never from
    the sizes the file states about itself.

    Examples
    --------
    >>> labels = np.zeros((2, 3, 4), np.uint8)
    >>> storable_as_sent(label_map_to_bytes(labels, np.eye(4)))
    True
    >>> storable_as_sent(label_map_to_bytes(labels, np.diag([-1, 1, 1, 1])))
    False
    """
    raw = bytes(raw)
    if raw[:2] != _GZIP_MAGIC or len(raw) < 18:
        return False
    stream = _GzipStream(raw)
    try:
        prefix = stream.read(352)
    except VolumeError:
        return False
    if len(prefix) < 352 or prefix[344:348] != _NIFTI1_MAGICS[0]:
        return False
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(prefix), check=False)
    dim = [int(d) for d in header["dim"]]
    slope, inter = (float(v) for v in (header["scl_slope"], header["scl_inter"]))
    if (
        dim[0] != 3
        or header.get_data_dtype() != np.dtype(np.uint8)
        or float(header["vox_offset"]) != 352.0
        or prefix[348:352] != b"\x00\x00\x00\x00"  # no extensions
        or not (slope in (0.0, 1.0) or np.isnan(slope))
        or not (inter == 0.0 or np.isnan(inter))
        or header.get_xyzt_units()[0] != "mm"
        or (int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0)
    ):
        return False
    affine = header.get_best_affine()
    if not np.array_equal(orientations.io_orientation(affine), [[0, 1], [1, 1], [2, 1]]):
        return False
    # One member holding the header and the voxels and nothing more, and nothing after
    # it: only inflating the stream (a chunk at a time, dropped) finds where it ends.
    expected = 352 + int(np.prod(dim[1:4], dtype=np.int64))
    size = len(prefix)
    try:
        while not stream.ended and size <= expected and stream.members == 1:
            size += len(stream.read(_CHUNK))
    except VolumeError:
        return False
    return size == expected and stream.members == 1 and not stream.cut and not stream.padded


# ------------------------------------------------------------------------- writers


class _GzipSink(io.RawIOBase):
    """A write-only file that gzips what is written to it, as it comes.

    nibabel writes a volume a slice at a time, so writing through this sink never holds
    the uncompressed file. The deflate stream does not depend on how its input is cut
    into writes, so the bytes equal ``gzip`` of the whole file at once, with a fixed
    header (mtime 0, no name, OS 255): same input, same bytes.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._out = io.BytesIO()  # getvalue() hands over its buffer: no copy of the result
        self._out.write(_GZIP_MAGIC + b"\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff")
        self._crc = 0
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._crc = zlib.crc32(view, self._crc)
        self._size += len(view)
        self._out.write(self._deflate.compress(view))
        return len(view)

    def tell(self) -> int:
        return self._size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET and offset == self._size:
            return offset
        raise io.UnsupportedOperation("a gzip sink only writes forward")  # nibabel then pads with zeros

    def getvalue(self) -> bytes:
        self._out.write(self._deflate.flush())
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        return self._out.getvalue()


def _checked_affine_arg(affine: np.ndarray) -> np.ndarray:
    affine = np.array(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine: expected shape (4, 4), got {affine.shape}")
    try:
        _check_affine(affine)
    except VolumeError as exc:
        raise ValueError(f"affine: {exc.message.split(';')[0]}") from None
    return affine


def _write(data: np.ndarray, affine: np.ndarray, *, intent: str | None = None, level: int = _GZIP_LEVEL) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, affine, header=header)
    img.set_qform(affine, code=_XFORM_SCANNER)
    img.set_sform(affine, code=_XFORM_SCANNER)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    img.header.set_slope_inter(1.0, 0.0)
    if intent is not None:
        img.header.set_intent(intent)
    sink = _GzipSink(level)
    img.to_file_map(img.make_file_map({"image": sink, "header": sink}))
    return sink.getvalue()


def label_map_to_bytes(labels: np.ndarray, affine: np.ndarray) -> bytes:
    """Write a label map as deterministic uint8 ``.nii.gz`` bytes.

    Parameters
    ----------
    labels : ndarray of shape (X, Y, Z), integer or bool
        Label values in 0..255, voxel order as in the file.
    affine : ndarray of shape (4, 4)
        Voxel to world RAS+ mm. Stored as both qform and sform, code 1 (scanner).

    Returns
    -------
    bytes
        gzip NIfTI-1, datatype uint8, intent ``label``; ``read_array`` gives back
        ``labels`` (as uint8) and ``affine`` (to float32 precision).

    Raises
    ------
    ValueError
        (not VolumeError: a caller bug) wrong shape or dtype, or values out of 0..255.

    Examples
    --------
    >>> labels = np.zeros((2, 2, 2), np.uint8); labels[0, 1, 1] = 3
    >>> back, aff = read_array(label_map_to_bytes(labels, np.eye(4)))
    >>> bool((back == labels).all()), back.dtype.name
    (True, 'uint8')
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels: expected 3 axes (X, Y, Z), got shape {labels.shape}")
    if labels.dtype.kind not in "biu":
        raise ValueError(f"labels: expected an integer or bool array, got {labels.dtype}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 255):
        raise ValueError(f"labels: values must be in 0..255, got {int(labels.min())}..{int(labels.max())}")
    # Level 1: label maps are long runs that compress well even so, and saves are on the
    # annotator's critical path (a 1 mm map: ~40 ms instead of ~150 ms at level 6).
    return _write(labels.astype(np.uint8, copy=False), _checked_affine_arg(affine), intent="label", level=1)


def image_to_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """Write an image as deterministic ``.nii.gz`` bytes.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z) or (X, Y, Z, T)
        Integer arrays keep their dtype (native byte order, bool becomes uint8);
        floating arrays are stored as float32.
    affine : ndarray of shape (4, 4)
        Voxel to world RAS+ mm, stored as qform and sform with code 1.

    Returns
    -------
    bytes
        gzip NIfTI-1 with no intensity scaling (``scl_slope`` 1, ``scl_inter`` 0).

    Raises
    ------
    ValueError
        Wrong number of axes, or an unsupported dtype (complex, object, ...).

    Examples
    --------
    >>> data = np.linspace(0, 1, 8, dtype=np.float64).reshape(2, 2, 2)
    >>> back, _ = read_array(image_to_bytes(data, np.eye(4)))
    >>> back.dtype.name, bool(np.allclose(back, data))
    ('float32', True)
    """
    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise ValueError(f"data: expected 3 or 4 axes, got shape {data.shape}")
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    elif data.dtype.kind == "f":
        data = data.astype(np.float32, copy=False)
    elif data.dtype.kind in "iu" and data.dtype.itemsize <= 8:
        data = data.astype(data.dtype.newbyteorder("="), copy=False)
    else:
        raise ValueError(f"data: expected an integer, bool or float array, got {data.dtype}")
    return _write(data, _checked_affine_arg(affine))


def probability_map_to_bytes(prob: np.ndarray, affine: np.ndarray) -> bytes:
    """Write probabilities as deterministic float32 ``.nii.gz`` bytes.

    Parameters
    ----------
    prob : ndarray of shape (X, Y, Z) or (X, Y, Z, L), floating
        One probability per voxel, or one per voxel and label with the label axis
        LAST (as NIfTI stores 4-D: the file's ``dim[4]`` is L). An array with the
        label axis first needs ``np.moveaxis(prob, 0, -1)``.
    affine : ndarray of shape (4, 4)
        Voxel to world RAS+ mm.

    Returns
    -------
    bytes
        gzip NIfTI-1, float32.

    Raises
    ------
    ValueError
        Wrong number of axes, a non-float dtype, or NaN/infinite values.

    Examples
    --------
    >>> prob = np.full((2, 2, 2, 3), 1 / 3)
    >>> back, _ = read_array(probability_map_to_bytes(prob, np.eye(4)))
    >>> back.shape, back.dtype.name
    ((2, 2, 2, 3), 'float32')
    """
    prob = np.asarray(prob)
    if prob.ndim not in (3, 4):
        raise ValueError(f"prob: expected shape (X, Y, Z) or (X, Y, Z, L), got {prob.shape}")
    if prob.dtype.kind != "f":
        raise ValueError(f"prob: expected a floating array, got {prob.dtype}")
    prob = prob.astype(np.float32)
    if not np.all(np.isfinite(prob)):
        raise ValueError("prob: contains NaN or infinite values")
    return _write(prob, _checked_affine_arg(affine))


def read_array(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Read NIfTI bytes that this module wrote, as stored (no reorientation).

    Parameters
    ----------
    raw : bytes
        Output of one of the ``*_to_bytes`` writers (or of ``ImageVolume.nifti_bytes``).

    Returns
    -------
    data : ndarray of shape (X, Y, Z) or (X, Y, Z, L)
        Stored dtype (native byte order; float32 when the header scales), writable.
    affine : ndarray of shape (4, 4), float64
        The stored affine (sform), in mm.

    Raises
    ------
    VolumeError
        Should the stored bytes be damaged: the same codes as :func:`load_image`,
        without a size limit and without the finiteness check.

    Examples
    --------
    >>> data, affine = read_array(label_map_to_bytes(np.ones((2, 2, 2), np.uint8), np.eye(4)))
    >>> data.shape, affine.dtype.name
    ((2, 2, 2), 'float64')
    """
    layout, stored = _decode(raw, limit=None, allow_4d=True)
    affine = _world_affine(layout.header)
    data = _voxels(layout, stored)
    if not data.flags.writeable:  # a plain .nii: a view of ``raw``
        data = data.copy()
    return data, affine
