"""Several sequences per scan: the resampling kernel against SimpleITK, the service and the API."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling import channels, selectors, services, volumes
from labeling.models import AuditEvent, ScanChannel
from tests.factories import AFFINE, add_scan, image_array, make_world, nifti_bytes

pytestmark = pytest.mark.django_db


def _oblique(spacing=(1.0, 1.0, 1.5), degrees=10.0, shift=(0.7, -1.3, 0.4)) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = shift
    return affine


def _sitk_image(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A RAS+ array and affine as a SimpleITK image (LPS physical space, z-y-x array order)."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.float32))
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in (lps / spacing).ravel()])
    image.SetOrigin([float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]])
    return image


def test_resample_onto_matches_simpleitk_linear():
    rng = np.random.default_rng(3)
    source = rng.normal(100, 20, size=(20, 22, 14)).astype(np.float32)
    source_affine = _oblique()
    ref_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    ref_affine[:3, 3] = (-3.0, -2.0, -1.0)
    shape = (10, 11, 9)
    ours = channels.resample_onto(source, source_affine, shape=shape, affine=ref_affine)

    oracle = sitk.Resample(
        _sitk_image(source, source_affine),
        _sitk_image(np.zeros(shape, np.float32), ref_affine),
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    expected = sitk.GetArrayFromImage(oracle).transpose(2, 1, 0)
    # Inside the field of view (away from the border, where the two differ on half-voxel rules).
    index_map = np.linalg.inv(source_affine) @ ref_affine
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    mapped = grid @ index_map[:3, :3].T + index_map[:3, 3]
    inside = np.all((mapped >= 0) & (mapped <= np.array(source.shape) - 1), axis=1).reshape(shape)
    assert inside.sum() > 200
    assert ours.resampled and ours.data.shape == shape
    np.testing.assert_allclose(ours.data[inside], expected[inside], rtol=0, atol=1e-3)
    np.testing.assert_allclose(np.array(ours.transform), index_map, atol=1e-9)
    assert ours.coverage == pytest.approx(
        np.all((mapped > -0.5) & (mapped < np.array(source.shape) - 0.5), axis=1).mean()
    )


def test_same_grid_keeps_the_data():
    data = image_array((6, 5, 4))
    kept = channels.resample_onto(data, AFFINE, shape=(6, 5, 4), affine=AFFINE)
    assert kept.data is data and not kept.resampled and kept.transform is None and kept.coverage == 1.0


def test_coverage_of_a_half_overlapping_volume():
    shifted = np.eye(4)
    shifted[0, 3] = 5.0  # 10 voxels wide, moved by half its width
    assert channels.coverage((10, 4, 4), shifted, shape=(10, 4, 4), affine=np.eye(4)) == pytest.approx(0.5)


@pytest.fixture
def world():
    w = make_world(raters_per_scan=1)
    services.project_update(project=w.project, actor=w.lead, channels=["T1w", "FLAIR"])
    w.project.refresh_from_db()
    return w


def test_a_flair_on_the_scans_grid_is_stored_as_uploaded(world):
    scan = add_scan(world, seed=1)
    flair = image_array(tuple(scan.shape), seed=9)
    channel = services.scan_channel_add(scan=scan, actor=world.lead, raw=nifti_bytes(flair, AFFINE), role="FLAIR")
    assert not channel.resampled and channel.transform is None
    stored, affine = volumes.read_array(channel.image.read())
    np.testing.assert_array_equal(
        stored, volumes.load_image(nifti_bytes(flair, AFFINE), max_decompressed_bytes=1 << 24).data
    )
    np.testing.assert_allclose(affine, np.array(scan.affine))
    assert [role for role, _ in selectors.scan_channel_files(scan=scan)] == ["T1w", "FLAIR"]
    event = AuditEvent.objects.get(action="scan.channel_add")
    assert event.data["role"] == "FLAIR" and event.data["resampled"] is False


def test_a_flair_on_another_grid_is_resampled_and_recorded(world):
    scan = add_scan(world, seed=1)
    fine = np.diag([0.5, 0.5, 0.5, 1.0]) @ np.array(AFFINE)  # half the voxel size, same origin
    fine[:3, 3] = np.array(AFFINE)[:3, 3]
    shape = tuple(2 * n for n in scan.shape)
    channel = services.scan_channel_add(
        scan=scan, actor=world.lead, raw=nifti_bytes(image_array(shape, seed=4), fine), role="FLAIR"
    )
    assert channel.resampled and channel.coverage > 0.9
    stored, affine = volumes.read_array(channel.image.read())
    assert list(stored.shape) == scan.shape
    np.testing.assert_allclose(affine, np.array(scan.affine), atol=1e-5)
    assert channel.source_shape == list(shape)


@pytest.mark.parametrize(
    ("role", "code"),
    [("T1w", "reference_channel"), ("T2w", "channel_not_declared")],
)
def test_channels_the_project_does_not_take_are_refused(world, role, code):
    scan = add_scan(world, seed=1)
    response = world.client(world.lead).post(
        f"/api/v1/scans/{scan.pk}/channels/",
        {"role": role, "file": SimpleUploadedFile("x.nii.gz", nifti_bytes(image_array(tuple(scan.shape)), AFFINE))},
        format="multipart",
    )
    assert response.status_code == 400 and response.json()["error"] == code
    assert not ScanChannel.objects.exists()


def test_a_channel_outside_the_field_of_view_is_refused(world):
    scan = add_scan(world, seed=1)
    far = np.array(AFFINE, dtype=float)
    far[:3, 3] += 500.0
    with pytest.raises(services.ValidationFailed) as refused:
        services.scan_channel_add(
            scan=scan, actor=world.lead, raw=nifti_bytes(image_array(tuple(scan.shape)), far), role="FLAIR"
        )
    assert refused.value.code == "no_overlap"


def test_the_api_lists_and_serves_channels_to_the_scans_rater_only(world):
    scan = add_scan(world, seed=1)
    lead = world.client(world.lead)
    listed = lead.get(f"/api/v1/scans/{scan.pk}/channels/").json()
    assert [(c["role"], c["present"]) for c in listed] == [("T1w", True), ("FLAIR", False)]
    upload = SimpleUploadedFile("f.nii.gz", nifti_bytes(image_array(tuple(scan.shape), seed=5), AFFINE))
    created = lead.post(f"/api/v1/scans/{scan.pk}/channels/", {"role": "FLAIR", "file": upload}, format="multipart")
    assert created.status_code == 201 and created.json()[1]["present"] is True
    again = lead.post(
        f"/api/v1/scans/{scan.pk}/channels/",
        {"role": "FLAIR", "file": SimpleUploadedFile("f.nii.gz", nifti_bytes(image_array(tuple(scan.shape)), AFFINE))},
        format="multipart",
    )
    assert again.status_code == 409

    rater = next(a.annotator for a in scan.assignments.all())
    other = next(u for u in world.annotators if u != rater)
    as_rater = world.client(rater)
    image = as_rater.get(f"/api/v1/scans/{scan.pk}/channels/FLAIR/image/")
    assert image.status_code == 200
    data, _ = volumes.read_array(b"".join(image.streaming_content))
    assert data.shape == tuple(scan.shape)
    assert as_rater.get(f"/api/v1/scans/{scan.pk}/channels/T1w/image/").status_code == 200
    assert as_rater.post(f"/api/v1/scans/{scan.pk}/channels/", {"role": "FLAIR"}).status_code == 403
    assert world.client(other).get(f"/api/v1/scans/{scan.pk}/channels/FLAIR/image/").status_code == 404
    assert as_rater.get(f"/api/v1/scans/{scan.pk}/channels/T2w/image/").status_code == 404


def test_missing_declared_channels_are_named(world):
    scan = add_scan(world, seed=1)
    with pytest.raises(selectors.MissingChannels) as missing:
        selectors.scan_channel_files(scan=scan)
    assert missing.value.roles == ["FLAIR"]


def test_a_project_without_channels_has_its_scans_image(world):
    services.project_update(project=world.project, actor=world.lead, channels=[])
    world.project.refresh_from_db()
    scan = add_scan(world, seed=2)
    assert selectors.scan_channel_files(scan=scan) == [("T1w", scan.image)]


@pytest.mark.parametrize("channels", [["T1w", "T1w"], ["T1w", "DWI"], ["T1w", "T2w", "FLAIR", "PD", "other"]])
def test_declared_channels_are_checked(world, channels):
    response = world.client(world.lead).patch(
        f"/api/v1/projects/{world.project.pk}/", {"channels": channels}, format="json"
    )
    assert response.status_code == 400, response.json()
    world.project.refresh_from_db()
    assert world.project.channels == ["T1w", "FLAIR"]


def test_the_first_channel_stays_once_there_are_scans(world):
    add_scan(world, seed=1)
    with pytest.raises(services.ValidationFailed) as refused:
        services.project_update(project=world.project, actor=world.lead, channels=["FLAIR", "T1w"])
    assert refused.value.code == "reference_channel_locked"
    services.project_update(project=world.project, actor=world.lead, channels=["T1w", "FLAIR", "T2w"])
    world.project.refresh_from_db()
    assert world.project.channels == ["T1w", "FLAIR", "T2w"]
