"""The DICOM import job: the service, the API, the command, and the PHI test. All DICOM data SIMULATED.

The import is one job (labeling/dicom_imports.py): the zip is spooled outside storage, analysed
(grouped, checked, de-identified, converted), waits for review, and its scans are created once
confirmed. These tests run the job in this process; tests/labeling/test_dicom_jobs.py runs it
through a real Celery worker, tests/labeling/test_dicom_sessions.py covers multi-sequence scans.

The PHI test imports a study with fake PHI (simulation.dicom.FAKE_PHI) and then looks for each
value everywhere the server wrote: every file under the storage folder (raw bytes, and
decompressed where gzip), every text value of every table, the logs, every API answer and the
command's output, after the analysis and after the scans are created; and the spooled upload
must be gone.
"""

from __future__ import annotations

import gzip
import importlib
import io
import logging
import os
import warnings
import zipfile

import nibabel as nib
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection

from labeling import dicom, dicom_imports, services
from labeling.models import AuditEvent, DicomImport, Project, Scan
from mriannot.jobs import JobStatus
from simulation import dicom as sim

SHAPE = (12, 10, 5)


def study_zip(*, folder_names: bool = True, **kwargs) -> bytes:
    """A zip of a simulated study; member paths name the patient, as real exports often do."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for ds in sim.study_datasets(shape=SHAPE, **kwargs):
            raw = io.BytesIO()
            ds.save_as(raw, enforce_file_format=True)
            folder = "DOE_JANE_MRN-7734219" if folder_names else "study"
            archive.writestr(f"{folder}/{ds.SeriesDescription}/{int(ds.InstanceNumber):03d}.dcm", raw.getvalue())
        archive.writestr("README.txt", b"exported by the PACS")
    return buffer.getvalue()


def phi_forms() -> list[bytes]:
    """Every fake-PHI value, and the forms it may take when written (names with spaces, parts)."""
    forms = set()
    for key, value in sim.FAKE_PHI.items():
        forms.add(value)
        if "^" in value:
            forms.add(value.replace("^", " "))
            forms.update(part for part in value.split("^") if len(part) > 2)
        if key == "StudyDate" or key == "PatientBirthDate":
            forms.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    forms.update({"Elsewhere", "Auschlander", "7734219", "55120931", "MRC40123"})
    return sorted(f.encode() for f in forms)


def import_study(world, raw: bytes | None = None, *, project=None, review: bool = False, **kwargs) -> dict:
    """The whole job in this process (analysis, then the scans with the guessed roles); its report."""
    raw = study_zip(**kwargs) if raw is None else raw
    job = dicom_imports.dicom_study_import(
        project=project or world.project, actor=world.lead, archive=io.BytesIO(raw), review=review
    )
    return dicom_imports.dicom_import_report(job)


@pytest.fixture(autouse=True)
def spool(settings, tmp_path):
    """The spool folder of the uploads waiting for analysis, one per test (checked empty after)."""
    folder = tmp_path / "spool"
    settings.MRIANNOT_DICOM_SPOOL_DIR = str(folder)
    return folder


def spooled(folder) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.django_db
def test_each_usable_series_becomes_a_scan_and_each_broken_one_says_why(world):
    report = import_study(world)
    by_number = {r["series_number"]: r for r in report["results"]}
    for spec in sim.USABLE + sim.BROKEN:
        result = by_number[spec.number]
        if spec.expect is None:
            assert result["status"] == "stored", result
        else:
            assert (result["status"], result["error"]) == ("refused", spec.expect)
            assert result["detail"]
    assert (report["stored"], report["refused"], report["duplicate"]) == (2, 6, 0)
    assert report["ignored_files"] == 1  # the README
    scans = {s.sequence: s for s in Scan.objects.filter(project=world.project)}
    assert set(scans) == {"T1w", "FLAIR"}
    t1 = scans["T1w"]
    secret = bytes.fromhex(world.project.deid_secret)
    assert t1.subject_id == dicom.pseudonym(patient_id=sim.FAKE_PHI["PatientID"], secret=secret)
    assert t1.original_filename.startswith(t1.subject_id) and t1.original_filename.endswith("_T1w.nii.gz")
    assert t1.field_strength == 3.0
    assert sorted(t1.spacing) == pytest.approx(sorted([0.9, 1.2, 3.6]), abs=1e-4)
    assert t1.assignments.count() == world.project.raters_per_scan
    # The same study again: duplicates, not new scans.
    again = import_study(world)
    assert (again["stored"], again["duplicate"]) == (0, 2)


@pytest.mark.django_db
def test_the_stored_volume_holds_the_series_pixels_where_the_headers_put_them(world):
    import_study(world, broken=False)
    scan = Scan.objects.get(project=world.project, sequence="T1w")
    stored = nib.as_closest_canonical(nib.load(scan.image.path))
    series = dicom.series_group(sim.series_datasets(sim.USABLE[0], shape=SHAPE, study_uid="1", frame_uid="2"))
    (slices,) = series.values()
    expected = nib.as_closest_canonical(nib.Nifti1Image(dicom.series_volume(slices), dicom.series_affine(slices)))
    np.testing.assert_allclose(stored.affine, expected.affine, atol=0.05)
    np.testing.assert_array_equal(np.asarray(stored.dataobj), np.asarray(expected.dataobj))


@pytest.mark.django_db
def test_a_simulated_subject_at_2mm_keeps_its_voxels(world):
    """The simulated T1w and FLAIR of one subject, written as oblique DICOM and imported."""
    datasets, images = sim.subject_study(seed=3)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, ds in enumerate(datasets):
            raw = io.BytesIO()
            ds.save_as(raw, enforce_file_format=True)
            archive.writestr(f"{n:05d}.dcm", raw.getvalue())
    report = import_study(world, buffer.getvalue())
    assert report["stored"] == 2, report["results"]
    roles = {"T1w": "T1w", "FLAIR": "FLAIR"}
    for contrast, role in roles.items():
        scan = Scan.objects.get(project=world.project, sequence=role)
        series = [ds for ds in datasets if ds.SeriesDescription == f"{contrast} simulated"]
        written = np.clip(np.round(images[contrast]), 0, 65535).astype(np.uint16)
        expected = nib.as_closest_canonical(nib.Nifti1Image(written, dicom.series_affine(series)))
        stored = nib.as_closest_canonical(nib.load(scan.image.path))
        assert stored.shape == images[contrast].shape
        np.testing.assert_allclose(stored.affine, expected.affine, atol=0.05)
        np.testing.assert_array_equal(np.asarray(stored.dataobj), np.asarray(expected.dataobj))


@pytest.mark.django_db
def test_projects_get_their_own_secret_and_pseudonyms(world):
    other = services.project_create(actor=world.lead, name="other")
    assert len(world.project.deid_secret) == 64 and other.deid_secret != world.project.deid_secret
    import_study(world, broken=False)
    import_study(world, project=other, broken=False)
    subjects = {s.project_id: s.subject_id for s in Scan.objects.all()}
    assert subjects[world.project.pk] != subjects[other.pk]


@pytest.mark.django_db
def test_the_migration_gives_existing_projects_one_key_each(world):
    from django.apps import apps

    one_key_each = importlib.import_module("labeling.migrations.0009_project_deid_secret").one_key_each
    services.project_create(actor=world.lead, name="second")
    Project.objects.update(deid_secret="0" * 64)  # as AddField's one default leaves them
    one_key_each(apps, None)
    keys = list(Project.objects.values_list("deid_secret", flat=True))
    assert len(set(keys)) == len(keys) == 2 and "0" * 64 not in keys


@pytest.mark.django_db
def test_the_secret_is_never_in_an_api_answer(world):
    client = world.client(world.lead)
    for url in (f"/api/v1/projects/{world.project.pk}/", "/api/v1/projects/"):
        response = client.get(url)
        assert response.status_code == 200
        assert world.project.deid_secret not in response.content.decode()


@pytest.mark.django_db
def test_audit_names_the_profile_and_attributes_never_values(world):
    import_study(world)
    event = AuditEvent.objects.get(action="scan.dicom_import")
    deid = event.data["deidentification"]
    assert deid["profile"] == dicom.PROFILE
    assert "PatientBirthDate" in deid["removed"] and "StudyInstanceUID" in deid["replaced"]
    assert deid["shifted"] == sorted(dicom.SHIFTED_DATES)
    assert deid["private_tags_removed"] > 0
    assert event.data["stored"] == 2 and event.data["refused"] == 6


@pytest.mark.django_db
def test_not_a_dicom_study(world, spool):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", b"hello")
    buffer.seek(0)
    with pytest.raises(services.ValidationFailed) as caught:
        dicom_imports.dicom_study_import(project=world.project, actor=world.lead, archive=buffer)
    assert caught.value.code == "no_dicom"
    job = DicomImport.objects.get()
    assert (job.status, job.error_code, job.upload_name) == (JobStatus.FAILED, "no_dicom", "")
    assert "no DICOM image" in job.error
    assert spooled(spool) == [] and not Scan.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"not a zip at all", "not_a_zip"), (None, "unsafe_path")],
)
def test_an_unsafe_archive_is_refused_at_once_without_naming_a_member(world, spool, raw, code):
    if raw is None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("../DOE_JANE_MRN-7734219/001.dcm", b"x")
        raw = buffer.getvalue()
    url = f"/api/v1/projects/{world.project.pk}/dicom-studies/"
    upload = SimpleUploadedFile("study.zip", raw, content_type="application/zip")
    response = world.client(world.lead).post(url, {"file": upload}, format="multipart")
    assert response.status_code == 400 and response.json()["error"] == code
    assert "DOE" not in response.content.decode()
    assert spooled(spool) == [] and not DicomImport.objects.exists()


@pytest.mark.django_db
def test_api_for_leads_only(world, spool):
    url = f"/api/v1/projects/{world.project.pk}/dicom-studies/"
    upload = SimpleUploadedFile("study.zip", study_zip(), content_type="application/zip")
    refused = world.client(world.annotators[0]).post(url, {"file": upload}, format="multipart")
    assert refused.status_code == 403
    assert not DicomImport.objects.exists() and spooled(spool) == []
    upload = SimpleUploadedFile("study.zip", study_zip(), content_type="application/zip")
    response = world.client(world.lead).post(url, {"file": upload, "auto_confirm": "true"}, format="multipart")
    assert response.status_code == 202, response.content
    answer = response.json()
    assert (answer["state"], answer["series"], answer["auto_confirm"]) == ("queued", [], True)
    assert len(spooled(spool)) == 1  # waits there for its worker, outside storage
    dicom_imports.dicom_import_execute(import_id=answer["id"])  # what the worker does
    assert spooled(spool) == []
    job = world.client(world.lead).get(f"/api/v1/dicom-imports/{answer['id']}/").json()
    assert (job["state"], job["summary"]["stored"], job["summary"]["refused"]) == ("done", 2, 6)
    assert world.client(world.annotators[0]).get(f"/api/v1/dicom-imports/{answer['id']}/").status_code == 403
    assert world.client(world.outsider).get(f"/api/v1/dicom-imports/{answer['id']}/").status_code == 404
    listed = world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/dicom-imports/").json()
    assert [j["id"] for j in listed] == [answer["id"]]


@pytest.mark.django_db
def test_the_lead_corrects_roles_then_confirms(world, stored_files):
    """The analysis waits for review; PATCH changes roles; confirming creates scans with them."""
    client = world.client(world.lead)
    upload = SimpleUploadedFile("study.zip", study_zip(), content_type="application/zip")
    answer = client.post(f"/api/v1/projects/{world.project.pk}/dicom-studies/", {"file": upload}, format="multipart")
    pk = answer.json()["id"]
    dicom_imports.dicom_import_execute(import_id=pk)
    url = f"/api/v1/dicom-imports/{pk}/"
    job = client.get(url).json()
    assert (job["state"], job["progress"]) == ("review", 1.0)
    assert "check their roles" in job["message"]
    rows = {r["series_number"]: r for r in job["series"]}
    t1, flair = rows[2], rows[3]
    assert (t1["role_guess"], t1["status"], t1["plan"]) == ("T1w", "ready", "scan")
    assert (flair["role"], flair["slices"], flair["te"]) == ("FLAIR", SHAPE[2], 81.0)
    assert rows[1]["status"] == "refused" and rows[1]["error"] == "localizer" and "plan" not in rows[1]
    assert not Scan.objects.exists()
    staged = [f for f in stored_files() if f.startswith(f"{dicom_imports.STAGING}/{pk}/")]
    assert len(staged) == 4  # a NIfTI and a zip of de-identified slices per usable series
    # Roles: a refused series, an unknown role, an unknown series are refused; a good change is kept.
    for body, code in (
        ({"roles": {str(rows[1]["index"]): "T1w"}}, "series_refused"),
        ({"roles": {str(t1["index"]): "T3"}}, "invalid"),
        ({"roles": {"99": "T1w"}}, "unknown_series"),
    ):
        refused = client.patch(url, body, format="json")
        assert refused.status_code == 400 and refused.json()["error"] == code, refused.content
    changed = client.patch(url, {"roles": {str(t1["index"]): "PD"}}, format="json")
    assert changed.status_code == 200
    assert {r["series_number"]: r["role"] for r in changed.json()["series"]}[2] == "PD"
    confirmed = client.post(f"{url}confirm/", {"roles": {str(flair["index"]): "T2w"}}, format="json")
    assert confirmed.status_code == 202 and confirmed.json()["state"] == "creating"
    dicom_imports.dicom_import_execute(import_id=pk)
    job = client.get(url).json()
    assert job["state"] == "done" and job["summary"]["stored"] == 2
    assert {s.sequence for s in Scan.objects.filter(project=world.project)} == {"PD", "T2w"}
    scan = Scan.objects.get(sequence="PD")
    assert scan.original_filename.endswith("_PD.nii.gz") and scan.dicom_series.name.endswith("-dicom.zip")
    assert not [f for f in stored_files() if f.startswith(f"{dicom_imports.STAGING}/")]  # staging removed
    actions = list(
        AuditEvent.objects.filter(target_type="dicomimport", target_id=str(pk))
        .values_list("action", flat=True)
        .order_by("id")
    )
    assert actions == ["dicom_import.request", "dicom_import.analyse", "dicom_import.roles", "dicom_import.confirm"]
    # Done: no more changes, no second confirmation.
    assert client.patch(url, {"roles": {str(t1["index"]): "T1w"}}, format="json").status_code == 409
    assert client.post(f"{url}confirm/", {}, format="json").status_code == 409


@pytest.mark.django_db
def test_discarding_an_import_removes_what_it_staged(world, stored_files, django_capture_on_commit_callbacks):
    report = import_study(world, review=True)
    assert report["state"] == "review" and report["ready"] == 2
    job = DicomImport.objects.get()
    assert any(f.startswith(f"{dicom_imports.STAGING}/{job.pk}/") for f in stored_files())
    client = world.client(world.lead)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.delete(f"/api/v1/dicom-imports/{job.pk}/")
    assert answer.status_code == 200 and answer.json()["state"] == "discarded"
    assert not [f for f in stored_files() if f.startswith(f"{dicom_imports.STAGING}/")]
    assert client.post(f"/api/v1/dicom-imports/{job.pk}/confirm/", {}, format="json").status_code == 409
    dicom_imports.dicom_import_execute(import_id=job.pk)  # a late message does nothing
    assert not Scan.objects.exists()


@pytest.mark.django_db
def test_command_review_then_confirm(world, tmp_path, capsys):
    sim.study_write(tmp_path / "DOE_JANE", shape=SHAPE)
    call_command("import_dicom", str(tmp_path / "DOE_JANE"), "--project", str(world.project.pk), "--review")
    out = capsys.readouterr().out
    job = DicomImport.objects.get()
    assert f"Import {job.pk} waits for review: 2 series ready, 6 refused" in out
    assert not Scan.objects.exists()
    t1 = next(r for r in job.series if r["series_number"] == 2)
    call_command("import_dicom", "--confirm", str(job.pk), "--role", f"{t1['index']}=T2w", "--user", "lead")
    out = capsys.readouterr().out
    assert "2 stored, 0 duplicate, 6 refused" in out
    assert {s.sequence for s in Scan.objects.all()} == {"T2w", "FLAIR"}


@pytest.mark.django_db
def test_command_imports_a_folder(world, tmp_path, capsys):
    sim.study_write(tmp_path / "DOE_JANE", shape=SHAPE)
    call_command("import_dicom", str(tmp_path / "DOE_JANE"), "--project", str(world.project.pk), "--user", "lead")
    out = capsys.readouterr().out
    assert "2 stored, 0 duplicate, 6 refused" in out
    assert "localizer" in out
    assert Scan.objects.filter(project=world.project).count() == 2


def _db_text() -> list[tuple[str, str]]:
    """Every value of every table, as text (the whole database, dumped through the connection)."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("latin-1")
                    if value is not None:
                        found.append((table, str(value)))
    return found


def _no_phi_in_storage(media, forms, *, expect_nifti: int) -> None:
    """No fake-PHI value in any file under storage: raw bytes, gzip-decompressed, zip members, names."""
    files = [p for p in media.rglob("*") if p.is_file()]
    assert sum(p.name.endswith(".nii.gz") for p in files) == expect_nifti
    for path in files:
        raw = path.read_bytes()
        contents = [raw]
        if raw[:2] == b"\x1f\x8b":
            contents.append(gzip.decompress(raw))
        if raw[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                contents += [archive.read(name) for name in archive.namelist()]
                contents.append(" ".join(archive.namelist()).encode())
        for content in contents:
            hits = [f for f in forms if f.lower() in content.lower()]
            assert not hits, (path.name, hits)
        assert not any(f.decode().lower() in str(path.relative_to(media)).lower() for f in forms)


def _no_phi_in_database(forms) -> None:
    rows = _db_text()
    assert any(table == "labeling_auditevent" for table, _ in rows)
    assert any(table == "labeling_dicomimport" for table, _ in rows)
    for table, value in rows:
        hits = [f for f in forms if f.decode().lower() in value.lower()]
        assert not hits, (table, hits)


@pytest.mark.django_db
def test_no_phi_anywhere_the_server_wrote(world, _media_root, spool, tmp_path, caplog, capsys):
    """Upload (a file name naming the patient), analysis, review, role change, confirmation, and a
    command import: after each phase no PHI value in storage, the database, logs or answers, and
    the spooled upload gone."""
    caplog.set_level(logging.DEBUG)
    forms = phi_forms()
    client = world.client(world.lead)
    answers = []
    upload = SimpleUploadedFile("DOE_JANE_MRN-7734219.zip", study_zip(), content_type="application/zip")
    response = client.post(f"/api/v1/projects/{world.project.pk}/dicom-studies/", {"file": upload}, format="multipart")
    assert response.status_code == 202
    answers.append(response)
    pk = response.json()["id"]
    dicom_imports.dicom_import_execute(import_id=pk)
    # After the analysis: the de-identified results staged, nothing else, the upload gone.
    assert spooled(spool) == []
    answers.append(client.get(f"/api/v1/dicom-imports/{pk}/"))
    answers.append(client.get(f"/api/v1/projects/{world.project.pk}/dicom-imports/"))
    assert answers[-2].json()["state"] == "review"
    _no_phi_in_storage(_media_root, forms, expect_nifti=2)
    _no_phi_in_database(forms)
    flair = next(r for r in answers[-2].json()["series"] if r["role"] == "FLAIR")
    answers.append(client.patch(f"/api/v1/dicom-imports/{pk}/", {"roles": {str(flair["index"]): "T2w"}}, format="json"))
    answers.append(client.post(f"/api/v1/dicom-imports/{pk}/confirm/", {}, format="json"))
    dicom_imports.dicom_import_execute(import_id=pk)
    answers.append(client.get(f"/api/v1/dicom-imports/{pk}/"))
    assert answers[-1].json()["summary"]["stored"] == 2
    # A second study through the command.
    sim.study_write(tmp_path / "dicom" / "DOE_JANE", shape=SHAPE, seed=1)
    call_command("import_dicom", str(tmp_path / "dicom"), "--project", str(world.project.pk))
    output = capsys.readouterr()
    assert Scan.objects.count() == 4 and spooled(spool) == []
    _no_phi_in_storage(_media_root, forms, expect_nifti=4)
    _no_phi_in_database(forms)
    answers.append(client.get(f"/api/v1/projects/{world.project.pk}/scans/"))
    # Logs, every API answer and the command's output.
    said = caplog.text + "".join(a.content.decode() for a in answers) + output.out + output.err
    assert all(a.status_code < 300 for a in answers)
    assert not [f for f in forms if f.decode().lower() in said.lower()]


@pytest.mark.django_db
def test_invalid_header_values_are_never_quoted_in_logs_or_warnings(world, caplog, recwarn):
    """A regression check: invalid or overlong values in the headers leave no trace in logs or warnings.

    (pydicom quotes invalid values when they are set or written; the import runs inside
    labeling.dicom.quiet, whose own test shows that it silences them.)
    """
    bad = {"PatientBirthDate": "DOE^JANE^Q 1961", "InstitutionName": sim.FAKE_PHI["InstitutionName"] * 3}
    spec = sim.spec_with(sim.USABLE[0], extra=bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("pydicom").disabled = True
        try:
            raw = study_zip(specs=(spec,))
        finally:
            logging.getLogger("pydicom").disabled = False
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    recwarn.clear()
    report = import_study(world, raw)
    assert report["stored"] == 1
    said = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert not [f for f in phi_forms() if f.decode().lower() in said.lower()]


@pytest.mark.django_db
def test_the_phi_test_would_see_a_leak(world, _media_root):
    """The check above can fail: a filename carrying the patient's name is found."""
    report = import_study(world, broken=False)
    scan = Scan.objects.get(pk=report["results"][0]["scan"])
    Scan.objects.filter(pk=scan.pk).update(original_filename="DOE^JANE^Q.nii.gz")
    assert any("DOE^JANE^Q" in value for _, value in _db_text())
    assert Project.objects.get(pk=world.project.pk).deid_secret


@pytest.mark.django_db
def test_a_spooled_upload_left_behind_is_swept_and_its_import_fails_cleanly(world, settings, tmp_path):
    """A worker killed before it read the upload: files_cleanup removes the spool file after its
    grace period (the default spool folder is Django's upload folder), and the import, when it is
    taken again, fails with upload_gone, keeping nothing."""
    from mriannot import storage

    settings.MRIANNOT_DICOM_SPOOL_DIR = ""
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    job = dicom_imports.dicom_import_request(
        project=world.project, actor=world.lead, upload=io.BytesIO(study_zip()), queue=False
    )
    spooled_file = tmp_path / "upload-tmp" / job.upload_name
    assert spooled_file.exists() and oct(spooled_file.stat().st_mode & 0o777) == "0o600"
    hours_ago = spooled_file.stat().st_mtime - 7200
    os.utime(spooled_file, (hours_ago, hours_ago))
    report = storage.files_cleanup(older_than_s=3600)
    assert str(spooled_file) in report.removed["upload leftover"] and not spooled_file.exists()
    with pytest.raises(services.ValidationFailed) as caught:
        dicom_imports.dicom_import_execute(import_id=job.pk)
    assert caught.value.code == "upload_gone"
    job.refresh_from_db()
    assert (job.status, job.error_code, job.series) == (JobStatus.FAILED, "upload_gone", [])


@pytest.mark.django_db
def test_a_failed_analysis_keeps_nothing_and_names_no_header_value(world, spool, stored_files, monkeypatch):
    """An unexpected error mid-analysis (here in the conversion of the second series, with PHI in
    its text): the job fails with the error's type only, the staged series and the upload are gone."""

    real = dicom.series_convert
    calls = []

    def second_one_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError(f"cannot convert {sim.FAKE_PHI['PatientName']}")
        return real(*args, **kwargs)

    monkeypatch.setattr(dicom, "series_convert", second_one_fails)
    with pytest.raises(services.ValidationFailed) as caught:
        import_study(world, broken=False)
    assert caught.value.code == "analysis_failed"
    job = DicomImport.objects.get()
    assert job.status == JobStatus.FAILED and "RuntimeError" in job.error and "DOE" not in job.error
    assert not stored_files() and spooled(spool) == []


@pytest.mark.django_db
def test_a_large_upload_spooled_by_django_is_linked_into_the_spool(world, settings, tmp_path):
    """An upload Django spooled to disk (over FILE_UPLOAD_MAX_MEMORY_SIZE) is linked, not copied,
    into the spool folder; Django's own file is gone after the request, the spool file after the
    analysis."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    settings.MRIANNOT_DICOM_SPOOL_DIR = ""
    (tmp_path / "upload-tmp").mkdir()
    raw = study_zip()
    upload = SimpleUploadedFile("DOE_JANE.zip", raw, content_type="application/zip")
    url = f"/api/v1/projects/{world.project.pk}/dicom-studies/"
    response = world.client(world.lead).post(url, {"file": upload}, format="multipart")
    assert response.status_code == 202
    left = list((tmp_path / "upload-tmp").iterdir())
    job = DicomImport.objects.get()
    assert [p.name for p in left] == [job.upload_name] and left[0].read_bytes() == raw
    assert job.upload_size == len(raw)
    dicom_imports.dicom_import_execute(import_id=job.pk)
    assert not list((tmp_path / "upload-tmp").iterdir())
