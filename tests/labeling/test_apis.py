"""The labeling API: a permission matrix over every endpoint and role, and every refusal.

Roles: ``own`` (the annotator assigned to the assignment under test), ``corater`` (another
annotator assigned to the same scan), ``other`` (an annotator of the project not on this
scan), ``lead``, ``outsider`` (a user of no project), ``anon`` and ``siteadmin`` (Django staff).
"""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
from rest_framework.test import APIClient

from labeling import services
from labeling.models import AnnotationRevision, Assignment, AuditEvent, Scan
from tests import factories

pytestmark = pytest.mark.django_db

OCTET = "application/octet-stream"


@pytest.fixture
def setup(world):
    """One scan with two raters; the first rater has saved one revision."""
    scan = factories.add_scan(world)
    own, corater = list(Assignment.objects.filter(scan=scan).order_by("annotator_id"))
    other = next(u for u in world.annotators if u.pk not in (own.annotator_id, corater.annotator_id))
    labels = factories.nifti_bytes(factories.label_array(), factories.AFFINE)
    revision, _ = services.revision_create(assignment=own, actor=own.annotator, raw=labels, base_revision_id=None)
    users = {
        "own": own.annotator,
        "corater": corater.annotator,
        "other": other,
        "lead": world.lead,
        "outsider": world.outsider,
        "siteadmin": world.site_admin,
        "anon": None,
    }
    return {"world": world, "scan": scan, "assignment": own, "revision": revision, "users": users, "labels": labels}


def client_for(setup, role) -> APIClient:
    return setup["world"].client(setup["users"][role])


ROLES = ["own", "corater", "other", "lead", "outsider", "anon", "siteadmin"]


def _expect(**overrides):
    row = dict.fromkeys(ROLES)
    row.update(overrides)
    return row


# endpoint name -> (method, url template, body kind, expected status per role)
MATRIX = {
    "project list": (
        "get",
        "/api/v1/projects/",
        None,
        _expect(own=200, corater=200, other=200, lead=200, outsider=200, anon=401, siteadmin=200),
    ),
    "project detail": (
        "get",
        "/api/v1/projects/{project}/",
        None,
        _expect(own=200, corater=200, other=200, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "project update": (
        "patch",
        "/api/v1/projects/{project}/",
        {"description": "new"},
        _expect(own=403, corater=403, other=403, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "project create": (
        "post",
        "/api/v1/projects/",
        {"name": "Another"},
        _expect(own=403, corater=403, other=403, lead=201, outsider=403, anon=401, siteadmin=201),
    ),
    "member list": (
        "get",
        "/api/v1/projects/{project}/members/",
        None,
        _expect(own=403, corater=403, other=403, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "member add": (
        "post",
        "/api/v1/projects/{project}/members/",
        {"username": "outsider", "role": "annotator"},
        _expect(own=403, corater=403, other=403, lead=201, outsider=404, anon=401, siteadmin=201),
    ),
    "label list": (
        "get",
        "/api/v1/projects/{project}/labels/",
        None,
        _expect(own=200, corater=200, other=200, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "label add": (
        "post",
        "/api/v1/projects/{project}/labels/",
        {"value": 9, "name": "Tumour", "color": "#ff0000"},
        _expect(own=403, corater=403, other=403, lead=201, outsider=404, anon=401, siteadmin=201),
    ),
    "scan list": (
        "get",
        "/api/v1/projects/{project}/scans/",
        None,
        _expect(own=200, corater=200, other=200, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "scan upload": (
        "post",
        "/api/v1/projects/{project}/scans/",
        "scan",
        _expect(own=403, corater=403, other=403, lead=201, outsider=404, anon=401, siteadmin=201),
    ),
    "scan detail": (
        "get",
        "/api/v1/scans/{scan}/",
        None,
        _expect(own=200, corater=200, other=404, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "scan image": (
        "get",
        "/api/v1/scans/{scan}/image/",
        None,
        _expect(own=200, corater=200, other=404, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "worklist": (
        "get",
        "/api/v1/me/worklist/",
        None,
        _expect(own=200, corater=200, other=200, lead=200, outsider=200, anon=401, siteadmin=200),
    ),
    "assignment list": (
        "get",
        "/api/v1/assignments/",
        None,
        _expect(own=200, corater=200, other=200, lead=200, outsider=200, anon=401, siteadmin=200),
    ),
    "assignment detail": (
        "get",
        "/api/v1/assignments/{assignment}/",
        None,
        _expect(own=200, corater=404, other=404, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "revision list": (
        "get",
        "/api/v1/assignments/{assignment}/revisions/",
        None,
        _expect(own=200, corater=404, other=404, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "revision save": (
        "post",
        "/api/v1/assignments/{assignment}/revisions/?base_revision={revision}",
        "labels",
        _expect(own=201, corater=404, other=404, lead=403, outsider=404, anon=401, siteadmin=403),
    ),
    "revision detail": (
        "get",
        "/api/v1/revisions/{revision}/",
        None,
        _expect(own=200, corater=404, other=404, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "revision labels": (
        "get",
        "/api/v1/revisions/{revision}/labels/",
        None,
        _expect(own=200, corater=404, other=404, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
    "submit": (
        "post",
        "/api/v1/assignments/{assignment}/submit/",
        {},
        _expect(own=200, corater=404, other=404, lead=403, outsider=404, anon=401, siteadmin=403),
    ),
    "audit": (
        "get",
        "/api/v1/projects/{project}/audit/",
        None,
        _expect(own=403, corater=403, other=403, lead=200, outsider=404, anon=401, siteadmin=200),
    ),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", list(MATRIX))
def test_permission_matrix(setup, endpoint, role):
    method, template, body, expected = MATRIX[endpoint]
    url = template.format(
        project=setup["world"].project.pk,
        scan=setup["scan"].pk,
        assignment=setup["assignment"].pk,
        revision=setup["revision"].pk,
    )
    client = client_for(setup, role)
    if body == "labels":
        labels = factories.label_array(values=(2, 3))
        response = client.post(url, factories.nifti_bytes(labels, factories.AFFINE), content_type=OCTET)
    elif body == "scan":
        upload = io.BytesIO(factories.nifti_bytes(factories.image_array(seed=99), factories.AFFINE))
        upload.name = "new.nii.gz"
        response = client.post(url, {"file": upload}, format="multipart")
    else:
        response = (
            getattr(client, method)(url, body, format="json") if body is not None else getattr(client, method)(url)
        )
    assert response.status_code == expected[role], (endpoint, role, getattr(response, "data", None))
    if response.status_code >= 400:
        body = response.json()
        assert body["error"] and body["detail"], body


def test_annotator_lists_show_only_their_own_work(setup):
    """Blinding: list endpoints never include a co-rater's assignment or revision."""
    corater = client_for(setup, "corater")
    assignments = corater.get("/api/v1/assignments/").json()
    assert [a["annotator"] for a in assignments] == [setup["users"]["corater"].username]
    worklist = corater.get("/api/v1/me/worklist/").json()
    assert setup["assignment"].pk not in [item["assignment"] for item in worklist]
    other_scans = client_for(setup, "other").get(f"/api/v1/projects/{setup['world'].project.pk}/scans/").json()
    assert other_scans == []


def test_lead_sees_every_assignment_of_the_project(setup):
    assignments = client_for(setup, "lead").get(f"/api/v1/assignments/?project={setup['world'].project.pk}").json()
    assert len(assignments) == 2


def test_downloaded_revision_is_the_saved_label_volume(setup):
    response = client_for(setup, "own").get(f"/api/v1/revisions/{setup['revision'].pk}/labels/")
    raw = b"".join(response.streaming_content)
    img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    np.testing.assert_array_equal(np.asarray(img.dataobj), factories.label_array())
    np.testing.assert_allclose(img.affine, factories.AFFINE)


def test_schema_and_docs_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_token_auth_for_scripts(world):
    client = APIClient()
    token = client.post("/api/v1/auth/token/", {"username": "lead", "password": factories.PASSWORD}, format="json")
    assert token.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    assert client.get("/api/v1/me/").json()["username"] == "lead"
    bad = APIClient().post("/api/v1/auth/token/", {"username": "lead", "password": "nope"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"] == "bad_credentials"


def test_session_login_enforces_csrf(world):
    client = APIClient(enforce_csrf_checks=True)
    csrf = client.get("/api/v1/auth/login/").json()["csrf_token"]  # the log-in POST needs it too
    login = client.post(
        "/api/v1/auth/login/",
        {"username": "lead", "password": factories.PASSWORD},
        format="json",
        HTTP_X_CSRFTOKEN=csrf,
    )
    assert login.status_code == 200
    no_token = client.patch(f"/api/v1/projects/{world.project.pk}/", {"description": "x"}, format="json")
    assert no_token.status_code == 403 and "CSRF" in no_token.json()["detail"]
    csrf = client.cookies["csrftoken"].value
    ok = client.patch(
        f"/api/v1/projects/{world.project.pk}/", {"description": "x"}, format="json", HTTP_X_CSRFTOKEN=csrf
    )
    assert ok.status_code == 200


# --- refusals: status, message, and nothing stored ---------------------------------------------


def _upload(world, raw: bytes, name: str = "scan.nii.gz"):
    upload = io.BytesIO(raw)
    upload.name = name
    return world.client(world.lead).post(
        f"/api/v1/projects/{world.project.pk}/scans/", {"file": upload}, format="multipart"
    )


def _nifti(data, affine=factories.AFFINE):
    return factories.nifti_bytes(np.asarray(data), affine)


def _singular_affine_nifti() -> bytes:
    """A NIfTI whose sform maps every voxel onto a plane (nibabel refuses to write one, so build it)."""
    data = factories.image_array()
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header["sform_code"], header["qform_code"] = 1, 0
    header["srow_x"], header["srow_y"], header["srow_z"] = [2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2, 0]
    header["vox_offset"] = 352
    return gzip.compress(header.binaryblock + b"\0" * 4 + data.tobytes(order="F"), mtime=0)


def _bomb() -> bytes:
    img = nib.Nifti1Image(np.zeros((256, 256, 256), np.float32), np.eye(4))
    return gzip.compress(img.to_bytes(), compresslevel=9)


BAD_SCANS = {
    "not nifti": (lambda: b"this is a text file, not an image" * 20, 400, "not_nifti", "NIfTI"),
    "truncated gzip": (lambda: _nifti(factories.image_array())[:200], 400, "truncated", "ends early"),
    "gzip bomb": (_bomb, 413, "too_large", "limit"),
    "2-D image": (lambda: _nifti(np.ones((10, 10), np.float32)), 400, "bad_dimensions", "3"),
    "4-D with two volumes": (lambda: _nifti(np.ones((6, 6, 6, 2), np.float32)), 400, "bad_dimensions", "volume"),
    "NaN values": (
        lambda: _nifti(np.where(np.indices((6, 6, 6))[0] == 2, np.nan, 1).astype(np.float32)),
        400,
        "non_finite",
        "NaN",
    ),
    "singular affine": (lambda: _singular_affine_nifti(), 400, "bad_affine", "not invertible"),
}


@pytest.mark.parametrize("case", list(BAD_SCANS))
def test_bad_scan_upload_is_refused_and_nothing_is_stored(world, stored_files, settings, case):
    settings.MRIANNOT_MAX_DECOMPRESSED_BYTES = 32 * 1024**2
    make, status_code, code, words = BAD_SCANS[case]
    before = set(stored_files())
    response = _upload(world, make())
    assert response.status_code == status_code, response.json()
    body = response.json()
    assert body["error"] == code
    assert words.lower() in body["detail"].lower()
    assert not Scan.objects.exists()
    assert set(stored_files()) == before
    assert not AuditEvent.objects.filter(action="scan.upload").exists()


def test_upload_over_the_size_limit_is_refused(world, stored_files, settings):
    settings.MRIANNOT_MAX_UPLOAD_BYTES = 1000
    response = _upload(world, _nifti(factories.image_array()))
    assert response.status_code == 413
    assert "MRIANNOT_MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert not Scan.objects.exists() and stored_files() == []


def test_upload_without_a_file_names_the_field(world):
    response = world.client(world.lead).post(f"/api/v1/projects/{world.project.pk}/scans/", {}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["fields"]


def test_four_d_with_one_volume_is_accepted(world):
    response = _upload(world, _nifti(factories.image_array()[..., None]))
    assert response.status_code == 201, response.json()
    assert response.json()["shape"] == [12, 10, 8]


def test_same_image_twice_is_a_conflict_naming_the_scan(world, stored_files):
    raw = _nifti(factories.image_array())
    first = _upload(world, raw)
    files = stored_files()
    second = _upload(world, raw)
    assert second.status_code == 409
    assert second.json() == {"error": "duplicate_scan", "detail": second.json()["detail"], "scan": first.json()["id"]}
    assert Scan.objects.count() == 1 and stored_files() == files


def _save(setup, raw: bytes, base="{revision}", role="own"):
    url = f"/api/v1/assignments/{setup['assignment'].pk}/revisions/?base_revision=" + base.format(
        revision=setup["revision"].pk
    )
    return client_for(setup, role).post(url, raw, content_type=OCTET)


BAD_LABELS = {
    "wrong shape": (lambda: _nifti(np.zeros((12, 10, 9), np.uint8)), "shape_mismatch", "(12, 10, 8)"),
    "wrong affine": (
        lambda: _nifti(factories.label_array(), np.diag([1.0, 1.0, 1.0, 1.0])),
        "affine_mismatch",
        "voxel size",
    ),
    "label outside schema": (lambda: _nifti(factories.label_array(values=(1, 7))), "labels_outside_schema", "7"),
    "non-integer labels": (
        lambda: _nifti(factories.label_array().astype(np.float32) * 0.5),
        "non_integer_labels",
        "integer",
    ),
    "negative labels": (lambda: _nifti(-factories.label_array().astype(np.int16)), "labels_outside_schema", "-1"),
    "not nifti": (lambda: b"\x00" * 400, "not_nifti", "NIfTI"),
    "empty body": (lambda: b"", "empty", "empty"),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_label_volume_is_refused_and_nothing_is_stored(setup, stored_files, case):
    make, code, words = BAD_LABELS[case]
    before = stored_files()
    response = _save(setup, make())
    assert response.status_code == 400, response.json()
    assert response.json()["error"] == code
    assert words.lower() in response.json()["detail"].lower()
    assert AnnotationRevision.objects.count() == 1
    assert stored_files() == before


def test_stale_base_is_409_with_the_current_revision(setup, stored_files):
    second = _save(setup, _nifti(factories.label_array(values=(2, 3))))
    assert second.status_code == 201
    before = stored_files()
    stale = _save(setup, _nifti(factories.label_array(values=(3, 1))))  # still based on the first revision
    assert stale.status_code == 409
    assert stale.json()["error"] == "stale_revision"
    assert stale.json()["current_revision"] == second.json()["id"]
    assert AnnotationRevision.objects.count() == 2 and stored_files() == before


def test_missing_base_revision_is_refused(setup):
    url = f"/api/v1/assignments/{setup['assignment'].pk}/revisions/"
    response = client_for(setup, "own").post(url, setup["labels"], content_type=OCTET)
    assert response.status_code == 400 and response.json()["error"] == "missing_base_revision"


def test_retried_save_returns_the_same_revision(setup):
    raw = _nifti(factories.label_array(values=(3, 2)))
    first = _save(setup, raw)
    again = _save(setup, raw)  # the client never saw the first answer and sends it again
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert AnnotationRevision.objects.count() == 2


def test_submitted_assignment_is_frozen(setup, stored_files):
    submit = client_for(setup, "own").post(f"/api/v1/assignments/{setup['assignment'].pk}/submit/", {}, format="json")
    assert submit.status_code == 200 and submit.json()["status"] == "submitted"
    before = stored_files()
    response = _save(setup, _nifti(factories.label_array(values=(3,))))
    assert response.status_code == 409 and response.json()["error"] == "submitted"
    assert stored_files() == before
    again = client_for(setup, "own").post(f"/api/v1/assignments/{setup['assignment'].pk}/submit/", {}, format="json")
    assert again.status_code == 409


def test_submit_of_a_stale_revision_is_refused(setup):
    newer = _save(setup, _nifti(factories.label_array(values=(3,))))
    response = client_for(setup, "own").post(
        f"/api/v1/assignments/{setup['assignment'].pk}/submit/", {"revision": setup["revision"].pk}, format="json"
    )
    assert response.status_code == 409 and response.json()["current_revision"] == newer.json()["id"]


def test_invalid_json_fields_are_named(world):
    response = world.client(world.lead).patch(
        f"/api/v1/projects/{world.project.pk}/", {"raters_per_scan": 0, "al_strategy": "psychic"}, format="json"
    )
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"raters_per_scan", "al_strategy"}


def test_unknown_url_is_json_404(client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_openapi_schema_is_valid_without_warnings():
    """The schema that /api/schema/ serves validates and drf-spectacular raises no warning."""
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_raters_never_see_the_uploaded_file_name():
    """A NIfTI's file name may name the patient: its leads see it, its raters do not."""
    world = factories.make_world(raters_per_scan=1)
    raw = factories.nifti_bytes(factories.image_array(), factories.AFFINE)
    scan = services.scan_create(project=world.project, actor=world.lead, raw=raw, filename="DOE_JANE_MRN7734.nii.gz")
    rater = scan.assignments.get().annotator
    for path in (f"/api/v1/scans/{scan.pk}/", f"/api/v1/projects/{world.project.pk}/scans/"):
        seen = world.client(rater).get(path)
        assert seen.status_code == 200 and "DOE_JANE" not in seen.content.decode()
        assert "DOE_JANE" in world.client(world.lead).get(path).content.decode()
