"""Tests for labeling.volumes, the single door to NIfTI (pure: no Django, no database).

Fixture files are written with nibabel directly (not with the module under test), so a
bug in our writers cannot hide a bug in our readers. SimpleITK serves as an outside
oracle for world coordinates.
"""

from __future__ import annotations

import gzip
import itertools
import struct
import tracemalloc
import zlib

import nibabel as nib
import numpy as np
import pytest

from labeling.volumes import (
    ERROR_CODES,
    ImageVolume,
    VolumeError,
    image_to_bytes,
    label_map_to_bytes,
    load_image,
    load_label_map,
    probability_map_to_bytes,
    read_array,
    storable_as_sent,
    value_counts,
)

LIMIT = 1 << 20  # 1 MiB: far above the 12 x 10 x 8 fixtures
SHAPE = (12, 10, 8)
SCHEMA = {0, 1, 2, 3}

# LPS with anisotropic spacing 1.0, 1.2, 2.5 mm and an origin away from zero.
LPS = np.array(
    [
        [-1.0, 0.0, 0.0, 40.0],
        [0.0, -1.2, 0.0, 25.0],
        [0.0, 0.0, 2.5, -30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
# Permuted axes, no obliquity: i -> posterior (1.0 mm), j -> superior (1.2 mm),
# k -> left (2.5 mm); axis codes "PSL".
PSL = np.array(
    [
        [0.0, 0.0, -2.5, 12.0],
        [-1.0, 0.0, 0.0, 30.0],
        [0.0, 1.2, 0.0, -7.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _theta_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return rot


OBLIQUE = _theta_z(20.0) @ LPS


def _distinct(shape=SHAPE, dtype=np.int16, seed=0) -> np.ndarray:
    """Every voxel a different value, so any wrong flip or permutation shows."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape).astype(dtype)


def _nii(data, affine, *, version=1, compress=True, edit=None) -> bytes:
    """A NIfTI file written by nibabel itself (not by the code under test)."""
    cls = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    img = cls(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if edit is not None:
        edit(img)
    raw = img.to_bytes()
    return gzip.compress(raw) if compress else raw


def _refused(code: str, raw: bytes, *words: str, label_map: bool = False, **kwargs) -> VolumeError:
    with pytest.raises(VolumeError) as info:
        if label_map:
            options = {
                "reference_shape": SHAPE,
                "reference_affine": LPS,
                "allowed_values": SCHEMA,
                "max_decompressed_bytes": LIMIT,
            }
            options.update(kwargs)
            load_label_map(raw, **options)
        else:
            load_image(raw, max_decompressed_bytes=kwargs.get("max_decompressed_bytes", LIMIT))
    err = info.value
    assert err.code == code, err.message
    assert err.code in ERROR_CODES
    assert str(err) == err.message
    for word in words:
        assert word.lower() in err.message.lower(), (word, err.message)
    return err


def _assert_same_world_values(orig, orig_affine, new, new_affine) -> None:
    """Every voxel of ``new`` sits on a voxel centre of ``orig`` with the same value."""
    ijk = np.indices(new.shape).reshape(3, -1)
    world = new_affine[:3, :3] @ ijk + new_affine[:3, 3:]
    back = np.linalg.inv(orig_affine) @ np.vstack([world, np.ones(ijk.shape[1])])
    idx = np.rint(back[:3]).astype(int)
    assert np.allclose(back[:3], idx, atol=1e-4)
    assert (idx >= 0).all() and (idx < np.array(orig.shape)[:, None]).all()
    np.testing.assert_array_equal(orig[tuple(idx)], new[tuple(ijk)])


# ------------------------------------------------------------------- reorientation


def test_lps_anisotropic_is_reoriented_to_ras_keeping_world_positions():
    orig = _distinct()
    vol = load_image(_nii(orig, LPS), max_decompressed_bytes=LIMIT)

    assert isinstance(vol, ImageVolume)
    assert vol.orientation == "LPS"
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.shape == vol.data.shape == (12, 10, 8)
    assert vol.spacing == pytest.approx((1.0, 1.2, 2.5))
    assert vol.data.dtype == np.int16
    # Hand-checked markers: x and y are flipped, z is kept.
    assert vol.data[0, 9, 0] == orig[11, 0, 0]
    assert vol.data[11, 0, 7] == orig[0, 9, 7]
    assert vol.data[3, 4, 5] == orig[8, 5, 5]
    # The canonical origin is the world point of original voxel (11, 9, 0).
    np.testing.assert_allclose(vol.affine[:3, 3], (LPS @ [11, 9, 0, 1])[:3], atol=1e-5)
    _assert_same_world_values(orig, LPS, vol.data, vol.affine)


def test_permuted_axes_are_reoriented_to_ras_keeping_world_positions():
    orig = _distinct(seed=1)
    vol = load_image(_nii(orig, PSL), max_decompressed_bytes=LIMIT)

    assert vol.orientation == "PSL"
    # R comes from k (flipped), A from i (flipped), S from j.
    assert vol.shape == (8, 12, 10)
    assert vol.spacing == pytest.approx((2.5, 1.0, 1.2))
    assert vol.data[0, 0, 0] == orig[11, 0, 7]
    assert vol.data[7, 11, 9] == orig[0, 9, 0]
    _assert_same_world_values(orig, PSL, vol.data, vol.affine)


def test_oblique_matches_nibabel_as_closest_canonical():
    """Oracle: nibabel.as_closest_canonical on the same file."""
    orig = _distinct(seed=2)
    raw = _nii(orig, OBLIQUE)
    vol = load_image(raw, max_decompressed_bytes=LIMIT)
    expected = nib.as_closest_canonical(nib.Nifti1Image.from_bytes(gzip.decompress(raw)))

    assert vol.orientation == "LPS"
    np.testing.assert_array_equal(vol.data, np.asanyarray(expected.dataobj))
    np.testing.assert_allclose(vol.affine, expected.affine, atol=1e-6)
    _assert_same_world_values(orig, OBLIQUE, vol.data, vol.affine)


def test_ras_file_is_left_as_is():
    orig = _distinct(seed=3)
    ras = np.diag([0.9, 1.1, 3.0, 1.0])
    vol = load_image(_nii(orig, ras), max_decompressed_bytes=LIMIT)
    assert vol.orientation == "RAS"
    np.testing.assert_array_equal(vol.data, orig)
    np.testing.assert_allclose(vol.affine, ras, atol=1e-6)


def test_canonical_world_positions_agree_with_simpleitk(tmp_path):
    """Oracle: SimpleITK (ITK's NIfTI reader, LPS world) on our stored bytes."""
    sitk = pytest.importorskip("SimpleITK")
    orig = _distinct(seed=4)
    vol = load_image(_nii(orig, PSL), max_decompressed_bytes=LIMIT)
    path = tmp_path / "canonical.nii.gz"
    path.write_bytes(vol.nifti_bytes)
    itk = sitk.ReadImage(str(path))
    itk_array = sitk.GetArrayFromImage(itk)  # (Z, Y, X) order
    for ijk in [(0, 0, 0), (7, 11, 9), (3, 5, 2), (6, 1, 8)]:
        ours = vol.affine @ [*ijk, 1]
        lps = itk.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk))
        np.testing.assert_allclose(lps, [-ours[0], -ours[1], ours[2]], atol=1e-4)
        assert itk_array[ijk[::-1]] == vol.data[ijk]


def test_image_volume_arrays_are_read_only():
    vol = load_image(_nii(_distinct(), LPS), max_decompressed_bytes=LIMIT)
    with pytest.raises(ValueError):
        vol.data[0, 0, 0] = 1
    with pytest.raises(ValueError):
        vol.affine[0, 0] = 1


# ---------------------------------------------------------------- accepted variants


def test_nifti_bytes_round_trip_to_the_canonical_volume():
    vol = load_image(_nii(_distinct(), LPS), max_decompressed_bytes=LIMIT)
    data, affine = read_array(vol.nifti_bytes)
    assert data.dtype == vol.data.dtype
    np.testing.assert_array_equal(data, vol.data)
    np.testing.assert_allclose(affine, vol.affine, atol=1e-5)
    again = load_image(_nii(_distinct(), LPS), max_decompressed_bytes=LIMIT)
    assert again.nifti_bytes == vol.nifti_bytes


def test_plain_uncompressed_nii_is_accepted():
    orig = _distinct()
    vol = load_image(_nii(orig, LPS, compress=False), max_decompressed_bytes=LIMIT)
    assert vol.data[0, 9, 0] == orig[11, 0, 0]


def test_nifti2_is_accepted():
    orig = _distinct().astype(np.float32)
    vol = load_image(_nii(orig, LPS, version=2), max_decompressed_bytes=LIMIT)
    assert vol.orientation == "LPS"
    _assert_same_world_values(orig, LPS, vol.data, vol.affine)


def test_single_volume_4d_is_squeezed():
    orig = _distinct()
    vol = load_image(_nii(orig[..., None], LPS), max_decompressed_bytes=LIMIT)
    assert vol.shape == SHAPE
    _assert_same_world_values(orig, LPS, vol.data, vol.affine)


def test_scaled_integers_become_float32_with_the_scaling_applied():
    orig = _distinct()

    def scale(img):
        img.header.set_slope_inter(0.5, 10.0)

    raw = _nii(orig, np.eye(4), compress=False, edit=scale)
    # nibabel may rewrite scaling on save; patch the stored fields to be sure.
    raw = raw[:112] + struct.pack("<ff", 0.5, 10.0) + raw[120:]
    vol = load_image(raw, max_decompressed_bytes=LIMIT)
    assert vol.data.dtype == np.float32
    np.testing.assert_allclose(vol.data, orig * 0.5 + 10.0)


def test_big_endian_file_gives_native_order():
    orig = _distinct()
    header = nib.Nifti1Header(endianness=">")
    header.set_data_dtype(np.dtype(">i2"))
    img = nib.Nifti1Image(orig, LPS, header=header)
    img.set_sform(LPS, code=1)
    raw = img.to_bytes()
    assert raw[:4] == struct.pack(">i", 348)
    vol = load_image(raw, max_decompressed_bytes=LIMIT)
    assert vol.data.dtype == np.dtype("=i2")
    _assert_same_world_values(orig, LPS, vol.data, vol.affine)


def test_metre_units_are_converted_to_millimetres():
    metres = LPS.copy()
    metres[:3, :] /= 1000.0

    def units(img):
        img.header.set_xyzt_units(xyz="meter")

    vol = load_image(_nii(_distinct(), metres, edit=units), max_decompressed_bytes=LIMIT)
    assert vol.spacing == pytest.approx((1.0, 1.2, 2.5), rel=1e-5)


def test_concatenated_gzip_members_are_accepted():
    raw = _nii(_distinct(), LPS, compress=False)
    two_members = gzip.compress(raw[:500]) + gzip.compress(raw[500:])
    vol = load_image(two_members, max_decompressed_bytes=LIMIT)
    assert vol.shape == SHAPE


# ------------------------------------------------------------------------- writers


def test_label_map_round_trips_bit_identically_and_deterministically():
    labels = (np.arange(np.prod(SHAPE)) % 4).reshape(SHAPE).astype(np.uint8)
    raw = label_map_to_bytes(labels, LPS)
    data, affine = read_array(raw)
    assert data.dtype == np.uint8
    assert data.tobytes() == labels.tobytes()
    np.testing.assert_allclose(affine, LPS, atol=1e-6)
    assert raw == label_map_to_bytes(labels.copy(), LPS.copy())
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    header = nib.Nifti1Image.from_bytes(gzip.decompress(raw)).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 1)
    assert header.get_data_dtype() == np.uint8
    assert header.get_intent()[0] == "label"
    assert header.get_xyzt_units()[0] == "mm"


def test_label_map_to_bytes_refuses_values_that_do_not_fit_uint8():
    labels = np.zeros(SHAPE, np.int16)
    labels[0, 0, 0] = 300
    with pytest.raises(ValueError, match=r"labels: values must be in 0\.\.255"):
        label_map_to_bytes(labels, LPS)
    with pytest.raises(ValueError, match="labels: expected an integer"):
        label_map_to_bytes(labels.astype(np.float32), LPS)


def test_writers_refuse_a_singular_affine():
    with pytest.raises(ValueError, match=r"affine: .*not invertible"):
        image_to_bytes(np.zeros(SHAPE, np.float32), np.diag([1.0, 0.0, 1.0, 1.0]))


def test_image_to_bytes_keeps_integers_and_stores_floats_as_float32():
    ints = _distinct(dtype=np.uint16)
    data, _ = read_array(image_to_bytes(ints, LPS))
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data, ints)
    floats = np.random.default_rng(5).normal(size=SHAPE)
    data, _ = read_array(image_to_bytes(floats, LPS))
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, floats.astype(np.float32))


def test_probability_map_keeps_the_label_axis_last():
    rng = np.random.default_rng(6)
    prob = rng.dirichlet(np.ones(4), size=SHAPE).astype(np.float32)  # (12, 10, 8, 4)
    raw = probability_map_to_bytes(prob, LPS)
    assert raw == probability_map_to_bytes(prob, LPS)
    data, affine = read_array(raw)
    np.testing.assert_allclose(affine, LPS, atol=1e-6)
    assert data.shape == (12, 10, 8, 4) and data.dtype == np.float32
    np.testing.assert_array_equal(data, prob)
    header = nib.Nifti1Image.from_bytes(gzip.decompress(raw)).header
    assert list(header["dim"][:5]) == [4, 12, 10, 8, 4]
    data3, _ = read_array(probability_map_to_bytes(prob[..., 1], LPS))
    np.testing.assert_array_equal(data3, prob[..., 1])


# ---------------------------------------------------------------------- label maps


def _scan(orig_affine=LPS) -> ImageVolume:
    return load_image(_nii(_distinct(), orig_affine), max_decompressed_bytes=LIMIT)


def test_label_map_in_the_original_orientation_lands_on_the_same_world_points():
    vol = _scan(PSL)
    labels = np.zeros(SHAPE, np.uint8)
    labels[11, 0, 7] = 1
    labels[0, 9, 0] = 2
    labels[2:5, 3:6, 1:4] = 3
    out = load_label_map(
        _nii(labels, PSL),
        reference_shape=vol.shape,
        reference_affine=vol.affine,
        allowed_values=SCHEMA,
        max_decompressed_bytes=LIMIT,
    )
    assert out.dtype == np.uint8 and out.shape == vol.shape == (8, 12, 10)
    assert out[0, 0, 0] == 1
    assert out[7, 11, 9] == 2
    assert int((out == 3).sum()) == 27
    _assert_same_world_values(labels, PSL, out, vol.affine)


def test_label_map_in_the_canonical_grid_is_accepted_unchanged():
    vol = _scan()
    labels = (np.arange(np.prod(SHAPE)) % 4).reshape(SHAPE).astype(np.uint8)
    out = load_label_map(
        label_map_to_bytes(labels, vol.affine),
        reference_shape=vol.shape,
        reference_affine=vol.affine,
        allowed_values=SCHEMA,
        max_decompressed_bytes=LIMIT,
    )
    np.testing.assert_array_equal(out, labels)
    out[0, 0, 0] = 3  # the caller owns a writable array


def test_integer_valued_float_label_map_is_accepted():
    vol = _scan(np.eye(4))
    labels = np.zeros(SHAPE, np.float32)
    labels[1, 2, 3] = 2.0
    out = load_label_map(
        _nii(labels, np.eye(4)),
        reference_shape=vol.shape,
        reference_affine=vol.affine,
        allowed_values=SCHEMA,
        max_decompressed_bytes=LIMIT,
    )
    assert out.dtype == np.uint8 and out[1, 2, 3] == 2 and int(out.sum()) == 2


def test_allowed_values_outside_uint8_is_a_caller_error():
    with pytest.raises(ValueError, match="allowed_values"):
        load_label_map(
            label_map_to_bytes(np.zeros(SHAPE, np.uint8), LPS),
            reference_shape=SHAPE,
            reference_affine=LPS,
            allowed_values={0, 256},
            max_decompressed_bytes=LIMIT,
        )


# ------------------------------------------------------------------------ refusals


def test_refuses_an_empty_upload():
    _refused("empty", b"", "empty", "0 bytes", ".nii")


def test_refuses_random_bytes_as_not_nifti():
    raw = np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    _refused("not_nifti", b"PK" + raw, "not a NIfTI", "magic", "as a .nii or .nii.gz file")


def test_refuses_a_gzip_whose_content_is_not_nifti():
    _refused(
        "not_nifti",
        gzip.compress(b"%PDF-1.7\n" + b"x" * 5000),
        "not a NIfTI",
        ".nii.gz",
    )


def test_refuses_a_bad_magic():
    raw = _nii(_distinct(), LPS, compress=False)
    _refused("not_nifti", raw[:344] + b"xyz\x00" + raw[348:], "magic")


def test_refuses_the_header_half_of_a_hdr_img_pair():
    raw = _nii(_distinct(), LPS, compress=False)
    _refused("not_nifti", raw[:344] + b"ni1\x00" + raw[348:], ".hdr/.img", "single-file")


def test_refuses_a_truncated_gzip_stream():
    raw = _nii(_distinct(), LPS)
    _refused("truncated", raw[: len(raw) - 200], "ends early", "complete")


def test_refuses_a_truncated_data_block():
    raw = _nii(_distinct(), LPS, compress=False)
    err = _refused("truncated", raw[:-100], "declares", "cut short", "complete file")
    assert str(352 + 960 * 2) in err.message and str(352 + 960 * 2 - 100) in err.message


def test_refuses_a_truncated_header():
    raw = _nii(_distinct(), LPS, compress=False)
    _refused("truncated", raw[:200], "header", "complete")


@pytest.mark.parametrize("offset", [np.nan, np.inf])
def test_refuses_a_header_whose_vox_offset_is_not_a_number(offset):
    raw = _nii(_distinct(), LPS, compress=False)
    raw = raw[:108] + struct.pack("<f", offset) + raw[112:]  # vox_offset
    _refused("corrupt", raw, "vox_offset", "damaged")


def test_refuses_a_corrupt_gzip_crc():
    raw = bytearray(_nii(_distinct(), LPS))
    raw[-8] ^= 0xFF  # CRC-32 in the gzip trailer
    _refused("corrupt", bytes(raw), "gzip", "damaged", "export")


def test_refuses_garbage_after_the_gzip_stream():
    _refused("corrupt", _nii(_distinct(), LPS) + b"garbage", "after the end", "export")


def test_refuses_a_header_that_declares_more_than_the_limit():
    big = np.zeros((64, 64, 64), np.float32)  # 1 MiB of voxels: over a 100 kB limit
    err = _refused(
        "too_large",
        _nii(big, LPS),
        "header declares",
        "limit",
        max_decompressed_bytes=100_000,
    )
    assert "1048928" in err.message and "100000" in err.message


def test_refuses_a_gzip_bomb_behind_a_small_header_without_inflating_it():
    """A valid 2 x 2 x 2 image (360 bytes) followed by 32 MiB of zeros (32 kB compressed).

    The header says where the image ends: the zeros after it are refused as trailing data
    after at most 64 KiB of them were inflated (before: inflated up to the limit, then 413).
    """
    header = _nii(np.zeros((2, 2, 2), np.uint8), np.eye(4), compress=False)
    bomb = gzip.compress(header + bytes(32 << 20), compresslevel=9)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        err = _refused(
            "trailing_data",
            bomb,
            "after the 360 bytes",
            "shape (2, 2, 2)",
            "nothing after the voxels",
            max_decompressed_bytes=32 << 20,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(1 << 16) in err.message
    assert peak < 1 << 20  # never the 32 MiB, nor the limit


def test_refuses_an_uncompressed_file_over_the_limit():
    raw = _nii(_distinct(), LPS, compress=False)
    _refused("too_large", raw, "limit", max_decompressed_bytes=1000)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (np.zeros((12, 10), np.int16), ("2-D", "3-D volume")),
        (np.zeros((12, 10, 8, 3), np.int16), ("3 volumes", "one 3-D volume")),
    ],
)
def test_refuses_anything_but_one_3d_volume(data, words):
    _refused("bad_dimensions", _nii(data, np.eye(4)), *words)


def test_refuses_a_zero_length_axis():
    raw = bytearray(_nii(_distinct(), LPS, compress=False))
    raw[44:46] = struct.pack("<h", 0)  # dim[2] = 0
    _refused("bad_dimensions", bytes(raw), "shape (12, 0, 8)")


def test_refuses_complex_voxels():
    _refused("bad_dtype", _nii(np.zeros(SHAPE, np.complex64), LPS), "complex", "float32")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_refuses_non_finite_image_values(bad):
    data = _distinct().astype(np.float32)
    data[3, 4, 5] = bad
    data[0, 0, 0] = bad
    _refused("non_finite", _nii(data, LPS), "2 voxels", "NaN or infinite", "replace")


def _with_srow(raw: bytes, affine: np.ndarray) -> bytes:
    """Overwrite the stored sform rows (offsets 280, 296, 312 of a NIfTI-1 header)."""
    rows = b"".join(struct.pack("<4f", *affine[r]) for r in range(3))
    return raw[:280] + rows + raw[328:]


def test_refuses_a_singular_affine():
    singular = LPS.copy()
    singular[:3, 2] = 0.0  # the k axis has no extent
    raw = _with_srow(_nii(_distinct(), LPS, compress=False), singular)
    _refused("bad_affine", raw, "not invertible", "fslorient")


def test_refuses_a_non_finite_affine():
    broken = LPS.copy()
    broken[0, 3] = np.nan
    raw = _with_srow(_nii(_distinct(), LPS, compress=False), broken)
    _refused("bad_affine", raw, "NaN", "orientation")


def test_refuses_a_label_map_of_another_shape():
    labels = np.zeros((12, 10, 9), np.uint8)
    err = _refused("shape_mismatch", _nii(labels, LPS), "(12, 10, 9)", label_map=True)
    assert "(12, 10, 8)" in err.message  # the flipped LPS grid keeps its shape


def test_refuses_a_label_map_shifted_by_two_millimetres():
    vol = _scan()
    shifted = LPS.copy()
    shifted[2, 3] += 2.0
    err = _refused(
        "affine_mismatch",
        _nii(np.zeros(SHAPE, np.uint8), shifted),
        "different position",
        "same qform/sform",
        label_map=True,
        reference_affine=vol.affine,
    )
    assert "-28." in err.message and "-30." in err.message  # both z origins shown


def test_refuses_labels_outside_the_schema():
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 7, 9
    err = _refused(
        "labels_outside_schema",
        _nii(labels, LPS),
        "7, 9",
        "allowed: 0, 1, 2, 3",
        label_map=True,
    )
    assert "relabel" in err.message


def test_refuses_negative_labels():
    labels = np.zeros(SHAPE, np.int16)
    labels[5, 5, 5] = -1
    _refused("labels_outside_schema", _nii(labels, LPS), "-1", label_map=True)


def test_lists_at_most_ten_offending_values():
    labels = (np.arange(np.prod(SHAPE)) % 30).reshape(SHAPE).astype(np.uint8)
    err = _refused(
        "labels_outside_schema",
        _nii(labels, LPS),
        "4, 5, 6",
        "and 16 more",
        label_map=True,
    )
    assert "14," not in err.message


def test_refuses_non_integer_labels():
    labels = np.zeros(SHAPE, np.float32)
    labels[2, 2, 2] = 0.5
    labels[3, 3, 3] = np.nan
    _refused(
        "non_integer_labels",
        _nii(labels, LPS),
        "2 voxels",
        "0.5",
        "uint8",
        label_map=True,
    )


# --------------------------------------------------------------------------- fuzzing


def _mutants(seed: int, count: int):
    rng = np.random.default_rng(seed)
    bases = [
        _nii(_distinct(), LPS, compress=False),
        _nii(_distinct(), LPS),
        _nii(_distinct().astype(np.float32), PSL, version=2, compress=False),
    ]
    for _ in range(count):
        raw = bytearray(bases[rng.integers(len(bases))])
        kind = rng.integers(3)
        if kind == 0:  # flip bytes, mostly in the header
            for _ in range(rng.integers(1, 5)):
                pos = rng.integers(min(len(raw), 560)) if rng.random() < 0.8 else rng.integers(len(raw))
                raw[pos] = rng.integers(256)
        elif kind == 1:  # cut
            raw = raw[: rng.integers(len(raw))]
        else:  # overwrite a header field with an extreme integer
            pos = int(rng.integers(0, 340)) & ~1
            raw[pos : pos + 2] = struct.pack("<h", int(rng.choice([-32768, -1, 0, 32767])))
        yield bytes(raw)


def test_random_mutations_raise_only_volume_error():
    reached = set()
    for raw in _mutants(seed=8, count=400):
        for call in (
            lambda r: load_image(r, max_decompressed_bytes=LIMIT),
            lambda r: load_label_map(
                r,
                reference_shape=SHAPE,
                reference_affine=LPS,
                allowed_values=range(256),
                max_decompressed_bytes=LIMIT,
            ),
        ):
            try:
                call(raw)
            except VolumeError as exc:
                assert exc.code in ERROR_CODES
                reached.add(exc.code)
            # any other exception fails the test
    # the mutations exercise several refusals, not one catch-all
    assert {"not_nifti", "truncated", "corrupt"} <= reached


@pytest.mark.parametrize("top", [0, 3, 31, 32, 255])
def test_value_counts_equal_bincount_in_any_memory_order(top):
    rng = np.random.default_rng(top)
    labels = rng.integers(0, top + 1, size=(9, 7, 5), dtype=np.uint8)
    for view in (labels, np.asfortranarray(labels), labels[::2, 1:, ::-1]):
        expected = np.bincount(view.ravel(), minlength=int(view.max()) + 1)
        assert value_counts(view).tolist() == expected.tolist()
    assert value_counts(np.zeros((0, 3, 3), np.uint8)).tolist() == []
    with pytest.raises(ValueError, match="uint8"):
        value_counts(labels.astype(np.int16))


def test_only_canonical_uint8_label_files_are_storable_as_sent():
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:5, 3:6, 1:4] = 2
    ours = label_map_to_bytes(labels, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert storable_as_sent(ours)
    plain = gzip.decompress(ours)
    assert not storable_as_sent(plain)  # not compressed: we compress it
    assert not storable_as_sent(ours + gzip.compress(b""))  # a second gzip member
    assert not storable_as_sent(gzip.compress(plain + b"\x00" * 8, mtime=0))  # bytes after the voxels
    assert not storable_as_sent(label_map_to_bytes(labels, LPS))  # not RAS+ voxel order
    img = nib.Nifti1Image(labels.astype(np.int16), np.eye(4))
    img.header.set_xyzt_units("mm")
    assert not storable_as_sent(gzip.compress(img.to_bytes()))  # not uint8
    scaled = nib.Nifti1Image(labels, np.eye(4))
    scaled.header.set_xyzt_units("mm")
    scaled.header.set_slope_inter(2.0, 0.0)
    assert not storable_as_sent(gzip.compress(scaled.to_bytes()))  # scaled voxels


# ------------------------------------------------- hostile input: what a file may cost


class _CountingInflater:
    """zlib's decompressor, counting every byte it hands out."""

    def __init__(self, inner, counter: list[int]) -> None:
        self._inner, self._counter = inner, counter

    def decompress(self, data, max_length=0):
        out = self._inner.decompress(data, max_length)
        self._counter[0] += len(out)
        return out

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture
def inflated(monkeypatch) -> list[int]:
    """``inflated[0]``: the bytes zlib inflated during the test."""
    counter = [0]
    real = zlib.decompressobj
    monkeypatch.setattr(zlib, "decompressobj", lambda *args, **kw: _CountingInflater(real(*args, **kw), counter))
    return counter


def _header_only(shape, dtype=np.float32) -> bytes:
    """A valid NIfTI-1 header (and extension flag) that declares ``shape``, with no voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    return header.binaryblock + b"\0" * 4


SLACK = 1 << 16  # bytes after the voxels that are tolerated and dropped


def test_a_header_that_declares_2_gib_is_refused_before_its_voxels_are_inflated(inflated):
    """The header declares 1024^3 x 2 bytes; the stream would inflate to 2 GiB of zeros (here:
    the header and the first 4 MiB, enough to show nothing past the header is touched)."""
    bomb = gzip.compress(_header_only((1024, 1024, 1024), np.int16) + bytes(4 << 20), compresslevel=9)
    err = _refused("too_large", bomb, "header declares", "2147484000", max_decompressed_bytes=1 << 30)
    assert str(1 << 30) in err.message
    assert inflated[0] <= 540  # a NIfTI-2 header's worth at most


def test_a_stream_longer_than_its_header_declares_stops_inflating_just_past_the_voxels(inflated):
    """8 MiB declared, 40 MiB of zeros in the stream, a 16 MiB limit: before, the stream was
    inflated up to the limit (16 MiB) and refused as too large; now it stops after the voxels
    and 64 KiB more, and is refused as trailing data."""
    declared = 352 + 128 * 128 * 128 * 4
    bomb = gzip.compress(_header_only((128, 128, 128)) + bytes(40 << 20), compresslevel=9)
    _refused("trailing_data", bomb, f"after the {declared} bytes", max_decompressed_bytes=16 << 20)
    assert declared < inflated[0] <= declared + SLACK + 1


@pytest.mark.parametrize("compress", [True, False])
def test_trailing_bytes_up_to_64_kib_are_dropped_and_more_are_refused(compress):
    raw = _nii(_distinct(), LPS, compress=False)
    padded = raw + bytes(SLACK)
    vol = load_image(gzip.compress(padded) if compress else padded, max_decompressed_bytes=LIMIT)
    np.testing.assert_array_equal(vol.data, load_image(raw, max_decompressed_bytes=LIMIT).data)
    assert len(gzip.decompress(vol.nifti_bytes)) == len(raw)  # what is kept is the image alone

    over = raw + bytes(SLACK + 1)
    err = _refused("trailing_data", gzip.compress(over) if compress else over, "after the 2272 bytes")
    assert "(12, 10, 8), int16" in err.message


def test_a_valid_scan_followed_by_a_gibibyte_of_zeros_is_refused_having_inflated_little(inflated):
    """The hostile upload of the benchmark, scaled down: 256 MiB of zeros after a scan."""
    raw = _nii(_distinct(), LPS, compress=False)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(raw)]
    zeros = bytes(16 << 20)
    parts += [compressor.compress(zeros) for _ in range(16)]
    hostile = b"".join([*parts, compressor.flush()])
    assert len(hostile) < 400_000
    _refused("trailing_data", hostile, max_decompressed_bytes=1 << 30)
    assert inflated[0] <= len(raw) + SLACK + 1


def test_a_second_gzip_member_after_a_label_map_is_refused_when_it_holds_data():
    labels = np.zeros(SHAPE, np.uint8)
    canonical = np.diag([2.0, 2.0, 2.0, 1.0])
    ours = label_map_to_bytes(labels, canonical)
    options = {"reference_shape": SHAPE, "reference_affine": canonical, "allowed_values": SCHEMA}
    appended = ours + gzip.compress(np.random.default_rng(1).bytes(SLACK + 1))
    _refused("trailing_data", appended, "after the 1312 bytes", label_map=True, **options)


def test_a_second_member_that_fakes_the_size_of_the_first_is_not_stored_as_sent():
    """ISIZE (the last 4 bytes) belongs to the LAST member: a second member exactly as long as
    header + voxels made the old size check pass. Accepted (it is within the 64 KiB that is
    dropped) but re-encoded, so what is stored is one canonical volume."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 2, 3] = 2
    canonical = np.diag([2.0, 2.0, 2.0, 1.0])
    ours = label_map_to_bytes(labels, canonical)
    appended = ours + gzip.compress(b"\xff" * (352 + labels.size))
    assert appended[-4:] == ours[-4:]  # the same ISIZE
    out = load_label_map(
        appended,
        reference_shape=SHAPE,
        reference_affine=canonical,
        allowed_values=SCHEMA,
        max_decompressed_bytes=LIMIT,
    )
    np.testing.assert_array_equal(out, labels)
    assert not storable_as_sent(appended)
    assert not storable_as_sent(ours + b"\x00" * 16)  # zero padding after the member
    assert not storable_as_sent(ours[:-20])  # cut
    assert storable_as_sent(ours)


def test_gzip_members_that_together_hold_the_image_are_one_image():
    """bgzip and pigz write many members: they are split anywhere, even inside the header."""
    raw = _nii(_distinct(), LPS, compress=False)
    cuts = [0, 7, 352, 353, 1000, len(raw)]
    members = b"".join(gzip.compress(raw[a:b]) for a, b in itertools.pairwise(cuts))
    members += gzip.compress(b"")  # an empty member is allowed too
    np.testing.assert_array_equal(
        load_image(members, max_decompressed_bytes=LIMIT).data,
        load_image(raw, max_decompressed_bytes=LIMIT).data,
    )


def _peak(call) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decoding_holds_the_payload_once_and_the_decoded_array():
    """4 MiB of float32 voxels in LPS order (so load_image must flip them into a new array).

    Before: the inflated bytes were copied into bytes, read by nibabel, converted and written
    whole again, 5.3x the payload for load_image and 3.0x for read_array."""
    data = (np.indices((128, 128, 64)).sum(0) % 97).astype(np.float32)
    raw = _nii(data, LPS)
    payload = data.nbytes
    assert _peak(lambda: load_image(raw, max_decompressed_bytes=LIMIT * 8)) < 2.6 * payload
    assert _peak(lambda: read_array(raw)) < 1.5 * payload


def test_scaled_voxels_are_computed_as_float64_then_kept_as_float32():
    """More voxels than one scaling step (1 Mi), so the steps must join up exactly."""
    stored = np.random.default_rng(3).integers(-3000, 3000, (130, 100, 90)).astype(np.int16)
    slope, inter = 0.37, -3.1

    def scaled(img):
        img.header.set_slope_inter(slope, inter)

    vol = load_image(_nii(stored, np.eye(4), edit=scaled), max_decompressed_bytes=LIMIT * 8)
    expected = (stored.astype(np.float64) * np.float32(slope) + np.float32(inter)).astype(np.float32)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, expected)


@pytest.mark.parametrize(
    "data",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.random.default_rng(0).normal(size=(5, 6, 7)),
        np.random.default_rng(0).normal(size=(5, 6, 7, 2)).astype(np.float32),
        np.arange(60, dtype=">i4").reshape(3, 4, 5),
        np.asfortranarray(np.arange(60, dtype=np.int16).reshape(3, 4, 5)),
    ],
)
def test_writers_stream_the_same_bytes_as_gzip_of_nibabels_whole_file(data):
    """The writer gzips as nibabel writes, slice by slice; the bytes are those of the whole
    file compressed at once (stored content hashes do not change)."""
    affine = LPS
    out_dtype = np.float32 if data.dtype.kind == "f" else data.dtype.newbyteorder("=")
    img = nib.Nifti1Image(np.asarray(data, out_dtype), affine)
    img.header.set_data_dtype(out_dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    img.header.set_slope_inter(1.0, 0.0)
    whole = img.to_bytes()
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    expected = (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        + compressor.compress(whole)
        + compressor.flush()
        + struct.pack("<II", zlib.crc32(whole), len(whole))
    )
    assert image_to_bytes(data, affine) == expected


def test_header_text_fields_of_an_upload_are_not_kept():
    """descrip, aux_file, db_name and intent_name may carry a name or an MRN: the stored file has none."""
    image = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4))
    image.header["descrip"] = b"DOE^JANE 1970-01-01"
    image.header["aux_file"] = b"MRN-7734219"
    image.header["db_name"] = b"ST-ANNE"
    image.header.set_intent("none", name="DOE")
    stored = gzip.decompress(load_image(image.to_bytes(), max_decompressed_bytes=1 << 20).nifti_bytes)
    for value in (b"DOE", b"JANE", b"7734219", b"ANNE", b"1970"):
        assert value not in stored
