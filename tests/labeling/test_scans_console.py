"""The Scans page's API: the scan list paged and filtered, splits per scan and by rule (stratified,
deterministic, frozen once a model used a scan), scan metadata (validated, no free text), a
metadata CSV (preview, all or nothing), and a .zip of scans (checked whole before anything is
stored). Every refusal names its reason; annotators are refused everything here but their own
scans in the list."""

from __future__ import annotations

import io
import stat
import zipfile
from collections import Counter

import numpy as np
import pytest

from active_learning.models import ModelVersion
from consensus import services as consensus_services
from labeling import metadata, selectors, splits
from labeling.archives import MAX_RATIO
from labeling.models import AuditEvent, Scan, ScanStatus, Split
from mriannot.jobs import JobStatus
from tests import factories

pytestmark = pytest.mark.django_db


def _url(world, tail: str = "scans/") -> str:
    return f"/api/v1/projects/{world.project.pk}/{tail}"


def _nifti(seed: int) -> bytes:
    return factories.nifti_bytes(factories.image_array(seed=seed), factories.AFFINE)


def _upload(world, raw: bytes, name: str = "scan.nii.gz", user=None, **fields):
    upload = io.BytesIO(raw)
    upload.name = name
    return world.client(user or world.lead).post(_url(world), {"file": upload, **fields}, format="multipart")


def _scans(world, n: int, **per_scan) -> list[Scan]:
    scans = []
    for i in range(n):
        scan = factories.add_scan(world, seed=100 + i, subject_id=f"sub-{i:03d}")
        if per_scan:
            Scan.objects.filter(pk=scan.pk).update(**{k: v(i) for k, v in per_scan.items()})
        scans.append(scan)
    return scans


# --- the list: paging and filters ---------------------------------------------------------------


def test_the_list_pages_with_limit_and_offset_and_says_the_total(world):
    scans = _scans(world, 7)
    client = world.client(world.lead)
    first = client.get(_url(world), {"limit": 3})
    assert first.status_code == 200
    assert [r["id"] for r in first.json()] == [s.pk for s in scans[:3]]
    assert first["X-Total-Count"] == "7"
    assert 'rel="next"' in first["Link"] and "offset=3" in first["Link"] and 'rel="prev"' not in first["Link"]
    last = client.get(_url(world), {"limit": 3, "offset": 6})
    assert [r["id"] for r in last.json()] == [scans[6].pk]
    assert 'rel="prev"' in last["Link"] and "offset=3" in last["Link"] and 'rel="next"' not in last["Link"]
    assert client.get(_url(world), {"limit": 3, "offset": 99}).json() == []
    # Without a limit: every scan, as before paging (existing callers keep working).
    everything = client.get(_url(world))
    assert len(everything.json()) == 7 and everything["X-Total-Count"] == "7"
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "x"}):
        response = client.get(_url(world), bad)
        assert response.status_code == 400 and response.json()["error"] == "invalid", bad


def test_the_list_filters_by_status_split_and_subject_and_shows_rater_progress(world):
    scans = _scans(world, 6, split=lambda i: [Split.TRAIN, Split.TEST][i % 2])
    Scan.objects.filter(pk=scans[0].pk).update(status=ScanStatus.FLAGGED, subject_id="sub-flag")
    client = world.client(world.lead)

    flagged = client.get(_url(world), {"status": "flagged"}).json()
    assert [r["id"] for r in flagged] == [scans[0].pk]
    tests = client.get(_url(world), {"split": "test", "limit": 10})
    assert [r["id"] for r in tests.json()] == [s.pk for s in scans[1::2]] and tests["X-Total-Count"] == "3"
    text = client.get(_url(world), {"q": "SUB-00"}).json()  # case-insensitive, part of the id
    assert [r["id"] for r in text] == [s.pk for s in scans[1:]]
    both = client.get(_url(world), {"q": "sub-00", "split": "train"}).json()
    assert [r["id"] for r in both] == [scans[2].pk, scans[4].pk]

    row = client.get(_url(world), {"limit": 1}).json()[0]
    assigned = scans[0].assignments.order_by("id")
    assert row["raters_assigned"] == 2 and row["raters_submitted"] == 0
    assert row["raters"] == [{"username": a.annotator.username, "status": a.status} for a in assigned]
    assert {"site", "scanner", "field_strength", "sequence", "sex", "age_band"} <= set(row)


def test_a_rater_sees_only_their_own_progress_and_cannot_filter_by_scan_status(world):
    scan = _scans(world, 1)[0]
    rater = scan.assignments.order_by("id").first().annotator
    client = world.client(rater)
    rows = client.get(_url(world), {"limit": 10}).json()
    assert [r["id"] for r in rows] == [scan.pk]
    assert rows[0]["raters"] == [{"username": rater.username, "status": "todo"}]  # not the co-rater
    refused = client.get(_url(world), {"status": "flagged"})
    assert refused.status_code == 403 and "lead" in refused.json()["detail"]


# --- splits by rule ------------------------------------------------------------------------------


RULE = {"train": 60, "validation": 20, "test": 20, "seed": 7}


def test_a_stratified_rule_gives_each_stratum_its_share_and_the_preview_is_what_applies(world):
    # 20 scans at site A, 10 at site B: 60/20/20 is 12/4/4 and 6/2/2, exactly.
    scans = _scans(world, 30, site=lambda i: "SITE-A" if i < 20 else "SITE-B")
    client = world.client(world.lead)
    body = {**RULE, "stratify_by": "site"}
    preview = client.post(_url(world, "splits/preview/"), body, format="json")
    assert preview.status_code == 200, preview.json()
    plan = preview.json()
    assert plan["applied"] is False and plan["changed"] == 30 and plan["frozen"] == []
    assert plan["strata"] == [
        {"stratum": "SITE-A", "scans": 20, "train": 12, "validation": 4, "test": 4},
        {"stratum": "SITE-B", "scans": 10, "train": 6, "validation": 2, "test": 2},
    ]
    assert plan["counts"] == {"train": 18, "validation": 6, "test": 6, "unassigned": 0}
    assert set(Scan.objects.values_list("split", flat=True)) == {"unassigned"}  # a preview changes nothing

    applied = client.post(_url(world, "splits/"), {**body, "plan_id": plan["plan_id"]}, format="json")
    assert applied.status_code == 200, applied.json()
    stored = dict(Scan.objects.values_list("id", "split"))
    assert stored == {c["scan"]: c["to"] for c in plan["changes"]}
    for site, share in (("SITE-A", (12, 4, 4)), ("SITE-B", (6, 2, 2))):
        counts = Counter(Scan.objects.filter(site=site).values_list("split", flat=True))
        assert (counts["train"], counts["validation"], counts["test"]) == share
    events = AuditEvent.objects.filter(action="scan.split_change")
    assert events.count() == 30
    assert {e.data["rule"]["stratify_by"] for e in events} == {"site"}
    assert AuditEvent.objects.get(action="project.splits_apply").data["changed"] == 30
    assert len(scans) == 30


def test_a_rule_is_deterministic_for_its_seed(world):
    _scans(world, 12)
    ids = list(Scan.objects.values_list("id", flat=True))
    first = selectors.split_plan(project=world.project, percentages={"train": 50, "validation": 25, "test": 25}, seed=3)
    again = selectors.split_plan(project=world.project, percentages={"train": 50, "validation": 25, "test": 25}, seed=3)
    other = selectors.split_plan(project=world.project, percentages={"train": 50, "validation": 25, "test": 25}, seed=4)
    assert first == again and first["plan_id"] == again["plan_id"]
    assert [c["to"] for c in first["changes"]] != [c["to"] for c in other["changes"]]
    assert first["plan_id"] != other["plan_id"]
    assert Counter(c["to"] for c in first["changes"]) == {"train": 6, "validation": 3, "test": 3}
    # The kernel on its own: the same answer, whatever order the ids come in.
    dealt = splits.allocate([(i, None) for i in ids], percentages={"train": 50, "validation": 25, "test": 25}, seed=3)
    assert (
        splits.allocate(
            [(i, None) for i in reversed(ids)], percentages={"train": 50, "validation": 25, "test": 25}, seed=3
        )
        == dealt
    )
    assert dealt == {c["scan"]: c["to"] for c in first["changes"]}


def test_a_rule_on_unassigned_scans_leaves_the_others_and_a_stale_preview_is_refused(world):
    scans = _scans(world, 6)
    Scan.objects.filter(pk=scans[0].pk).update(split=Split.TEST)
    client = world.client(world.lead)
    plan = client.post(_url(world, "splits/preview/"), RULE, format="json").json()
    assert plan["scans"] == 5 and scans[0].pk not in [c["scan"] for c in plan["changes"]]
    factories.add_scan(world, seed=999)  # the scans change after the preview
    stale = client.post(_url(world, "splits/"), {**RULE, "plan_id": plan["plan_id"]}, format="json")
    assert stale.status_code == 409 and stale.json()["error"] == "plan_changed"
    assert Scan.objects.exclude(split=Split.UNASSIGNED).count() == 1  # nothing applied


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"train": 60, "validation": 20, "test": 10}, "add up to 90"),
        ({"train": 101, "validation": 0, "test": 0}, "train"),
        ({**RULE, "stratify_by": "patient_name"}, "stratify_by"),
        ({**RULE, "seed": 2**32}, "seed"),
        ({**RULE, "scope": "everything"}, "scope"),
    ],
)
def test_a_bad_rule_is_refused_with_the_reason(world, body, field):
    response = world.client(world.lead).post(_url(world, "splits/preview/"), body, format="json")
    assert response.status_code == 400 and field in response.json()["detail"]


# --- frozen splits -------------------------------------------------------------------------------


def _trained_on(world, scans_by_use: dict) -> ModelVersion:
    """A finished model version that trained on ``scans_by_use["train"]`` and validated on
    ``scans_by_use["validation"]`` (through their ground truths, as training records them)."""
    truth_ids = {}
    for use, scans in scans_by_use.items():
        truth_ids[use] = []
        for scan in scans:
            truth = consensus_services.ground_truth_edit(
                scan=scan,
                actor=world.lead,
                raw=factories.nifti_bytes(factories.label_array(), np.asarray(scan.affine)),
            )
            truth_ids[use].append(truth.pk)
    number = ModelVersion.objects.filter(project=world.project).count() + 1
    return ModelVersion.objects.create(
        project=world.project,
        version=number,
        status=JobStatus.DONE,
        ground_truth_ids=truth_ids.get("train", []),
        validation_ground_truth_ids=truth_ids.get("validation", []),
    )


def test_a_split_a_model_used_is_frozen_and_an_override_lists_what_it_invalidates(world):
    scans = _scans(world, 3, split=lambda i: [Split.TRAIN, Split.VALIDATION, Split.TRAIN][i])
    v1 = _trained_on(world, {"train": [scans[0]], "validation": [scans[1]]})
    v2 = _trained_on(world, {"train": [scans[0]]})
    client = world.client(world.lead)
    detail = f"/api/v1/scans/{scans[1].pk}/"

    refused = client.patch(detail, {"split": "train"}, format="json")
    assert refused.status_code == 409
    body = refused.json()
    assert body["error"] == "split_frozen" and "override_frozen" in body["detail"]
    assert body["model_versions"] == [{"model_version": v1.pk, "version": 1, "scans": [scans[1].pk]}]
    assert Scan.objects.get(pk=scans[1].pk).split == Split.VALIDATION

    # Metadata of a frozen scan may change; and a scan no model used moves freely.
    assert client.patch(detail, {"site": "SITE-C"}, format="json").status_code == 200
    free = client.patch(f"/api/v1/scans/{scans[2].pk}/", {"split": "test"}, format="json")
    assert free.status_code == 200 and free.json()["invalidated_model_versions"] == []

    moved = client.patch(f"/api/v1/scans/{scans[0].pk}/", {"split": "test", "override_frozen": True}, format="json")
    assert moved.status_code == 200
    assert moved.json()["split"] == "test"
    assert [v["version"] for v in moved.json()["invalidated_model_versions"]] == [1, 2]
    event = AuditEvent.objects.filter(action="scan.split_change", target_id=str(scans[0].pk)).get()
    assert event.data["from"] == "train" and event.data["to"] == "test"
    assert [v["model_version"] for v in event.data["invalidated_model_versions"]] == [v1.pk, v2.pk]


def test_a_rule_over_frozen_scans_needs_the_override(world):
    scans = _scans(world, 10, split=lambda i: Split.TRAIN)
    _trained_on(world, {"train": scans[:2]})
    client = world.client(world.lead)
    body = {**RULE, "scope": "all"}
    plan = client.post(_url(world, "splits/preview/"), body, format="json").json()
    frozen = {f["scan"] for f in plan["frozen"]}
    assert frozen and frozen <= {scans[0].pk, scans[1].pk}
    assert plan["invalidated_model_versions"][0]["version"] == 1

    refused = client.post(_url(world, "splits/"), {**body, "plan_id": plan["plan_id"]}, format="json")
    assert refused.status_code == 409 and refused.json()["error"] == "split_frozen"
    assert set(Scan.objects.values_list("split", flat=True)) == {"train"}

    applied = client.post(
        _url(world, "splits/"), {**body, "plan_id": plan["plan_id"], "override_frozen": True}, format="json"
    )
    assert applied.status_code == 200 and applied.json()["invalidated_model_versions"][0]["version"] == 1
    summary = AuditEvent.objects.get(action="project.splits_apply")
    assert summary.data["invalidated_model_versions"][0]["version"] == 1


# --- metadata ------------------------------------------------------------------------------------


def test_an_upload_sets_the_metadata_of_its_batch(world):
    response = _upload(
        world,
        _nifti(1),
        site="SITE-A",
        scanner="Prisma 3T",
        field_strength="3",
        sequence="FLAIR",
        sex="F",
        age_band="60-69",
        split="validation",
    )
    assert response.status_code == 201, response.json()
    scan = Scan.objects.get(pk=response.json()["id"])
    assert (scan.site, scan.scanner, scan.field_strength, scan.sequence, scan.sex, scan.age_band) == (
        "SITE-A",
        "Prisma 3T",
        3.0,
        "FLAIR",
        "F",
        "60-69",
    )
    assert scan.split == "validation"
    assert AuditEvent.objects.get(action="scan.upload", target_id=str(scan.pk)).data["metadata"]["site"] == "SITE-A"


@pytest.mark.parametrize(
    ("fields", "column", "says"),
    [
        ({"site": "John Smith 1967-03-12"}, "site", "looks like a date"),
        ({"scanner": "MRN 004412345"}, "scanner", "digits in a row"),
        ({"site": "St. Mary's"}, "site", "not a short identifier"),
        ({"site": "x" * 65}, "site", "64"),
        ({"sequence": "DWI"}, "sequence", "T1w"),
        ({"age_band": "42"}, "age_band", ""),
        ({"sex": "female"}, "sex", ""),
        ({"field_strength": "30"}, "field_strength", ""),
        ({"patient_name": "Jane Doe"}, "patient_name", "no free-text patient data"),
        ({"date_of_birth": "1950-01-01"}, "date_of_birth", "Unknown field"),
    ],
)
def test_metadata_outside_the_columns_and_vocabularies_is_refused_and_nothing_stored(
    world, stored_files, fields, column, says
):
    response = _upload(world, _nifti(2), **fields)
    assert response.status_code == 400, response.json()
    assert column in response.json()["detail"] and says in response.json()["detail"]
    assert not Scan.objects.exists() and stored_files() == []


def test_a_lead_edits_one_scans_metadata_audited_and_a_rater_cannot(world):
    scan = _scans(world, 1)[0]
    client = world.client(world.lead)
    response = client.patch(f"/api/v1/scans/{scan.pk}/", {"sex": "M", "field_strength": 1.5}, format="json")
    assert response.status_code == 200 and response.json()["sex"] == "M"
    event = AuditEvent.objects.get(action="scan.metadata_update")
    assert event.data == {"changes": {"sex": ["", "M"], "field_strength": [None, 1.5]}, "source": "edit"}
    # Clearing a value: empty is "not recorded".
    assert client.patch(f"/api/v1/scans/{scan.pk}/", {"sex": ""}, format="json").json()["sex"] == ""
    rater = scan.assignments.first().annotator
    refused = world.client(rater).patch(f"/api/v1/scans/{scan.pk}/", {"sex": "F"}, format="json")
    assert refused.status_code == 403
    assert Scan.objects.get(pk=scan.pk).sex == ""


def test_the_metadata_kernel_refuses_free_text_and_takes_the_vocabularies():
    assert metadata.clean_record({"site": "UCL-Queen Square", "scanner": "Discovery MR750"}) == {
        "site": "UCL-Queen Square",
        "scanner": "Discovery MR750",
    }
    for bad in ("12/03/1967", "2024.01.05", "19670312", "Patient: Smith", "Smith, John", "a\nb", "", " "):
        if bad.strip():
            with pytest.raises(metadata.MetadataError):
                metadata.clean_record({"site": bad})
        else:
            assert metadata.clean_record({"site": bad}) == {"site": ""}
    assert metadata.clean_record({"sequence": "t2W", "age_band": "80+", "field_strength": "1.5 T"}) == {
        "sequence": "T2w",
        "age_band": "80+",
        "field_strength": 1.5,
    }
    for strength in ("nan", "inf", "-3", "0", "1e999", True):
        with pytest.raises(metadata.MetadataError):
            metadata.clean_record({"field_strength": strength})


# --- metadata CSV ----------------------------------------------------------------------------------


def _csv(world, text: str, *, apply: bool, user=None):
    upload = io.BytesIO(text.encode())
    upload.name = "metadata.csv"
    return world.client(user or world.lead).post(
        _url(world, "scan-metadata/"), {"file": upload, "apply": "true" if apply else "false"}, format="multipart"
    )


def test_a_csv_is_previewed_row_by_row_and_applied_all_or_nothing(world):
    scans = _scans(world, 3)
    Scan.objects.filter(pk=scans[2].pk).update(subject_id="sub-000", session_id="ses-2")  # two scans of sub-000
    text = (
        "subject_id,session_id,site,sequence,field_strength\n"
        "sub-001,,SITE-A,FLAIR,3\n"  # fine
        "sub-000,,SITE-B,T1w,1.5\n"  # ambiguous: two scans of sub-000
        "sub-404,,SITE-A,T1w,3\n"  # no such subject
        "sub-000,ses-2,Dr Who 2024-01-01,T1w,3\n"  # a date in the site
    )
    preview = _csv(world, text, apply=False)
    assert preview.status_code == 200, preview.json()
    rows = preview.json()["rows"]
    assert [r["line"] for r in rows] == [2, 3, 4, 5]
    assert rows[0] == {
        "line": 2,
        "scan": scans[1].pk,
        "subject_id": "sub-001",
        "session_id": "",
        "changes": {"site": ["", "SITE-A"], "sequence": ["", "FLAIR"], "field_strength": [None, 3.0]},
        "errors": [],
    }
    assert "2 scans match" in rows[1]["errors"][0] and "session_id" in rows[1]["errors"][0]
    assert rows[2]["errors"] == ["no scan of this subject"]
    assert rows[3]["scan"] == scans[2].pk and "looks like a date" in rows[3]["errors"][0]
    assert preview.json()["errors"] == 3 and preview.json()["applied"] is False

    refused = _csv(world, text, apply=True)
    assert refused.status_code == 400 and refused.json()["error"] == "csv_rows_refused"
    assert [r["line"] for r in refused.json()["rows"]] == [3, 4, 5]
    assert not Scan.objects.exclude(site="").exists()  # nothing changed

    fixed = "scan,site,sequence,sex\n" + "\n".join(
        f"{s.pk},SITE-A,T2w,{sex}" for s, sex in zip(scans, "FM", strict=False)
    )
    applied = _csv(world, fixed, apply=True)
    assert applied.status_code == 200 and applied.json()["applied"] is True and applied.json()["changes"] == 2
    assert list(Scan.objects.order_by("id").values_list("site", "sex")) == [("SITE-A", "F"), ("SITE-A", "M"), ("", "")]
    events = AuditEvent.objects.filter(action="scan.metadata_update")
    assert events.count() == 2 and {e.data["source"] for e in events} == {"csv"}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("scan,site,patient_name\n1,SITE-A,Jane Doe\n", "unknown_columns"),
        ("scan,site,notes\n1,SITE-A,seen 2024-01-01\n", "unknown_columns"),
        ("site,sex\nSITE-A,F\n", "missing_key_column"),
        ("scan,subject_id\n1,sub-1\n", "no_metadata_columns"),
        ("scan,site,site\n1,A,B\n", "repeated_columns"),
        ("", "invalid"),  # an empty file: DRF refuses it first
    ],
)
def test_a_csv_with_a_column_we_do_not_take_is_refused_whole(world, text, code):
    _scans(world, 1)
    response = _csv(world, text, apply=False)
    assert response.status_code == 400 and response.json()["error"] == code
    if code == "unknown_columns":
        assert "Free-text" in response.json()["detail"]


def test_a_csv_that_is_not_utf8_text_or_too_large_is_refused(world):
    upload = io.BytesIO(b"scan,site\n1,\xff\xfe\n")
    upload.name = "m.csv"
    response = world.client(world.lead).post(_url(world, "scan-metadata/"), {"file": upload}, format="multipart")
    assert response.status_code == 400 and response.json()["error"] == "not_utf8"
    big = io.BytesIO(b"scan,site\n" + b"1,A\n" * (metadata.CSV_MAX_BYTES // 4 + 1))
    big.name = "m.csv"
    response = world.client(world.lead).post(_url(world, "scan-metadata/"), {"file": big}, format="multipart")
    assert response.status_code == 413


# --- a .zip of scans ---------------------------------------------------------------------------------


def _zip(members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _post_zip(world, raw: bytes, user=None, **fields):
    upload = io.BytesIO(raw)
    upload.name = "scans.zip"
    return world.client(user or world.lead).post(
        _url(world, "scan-archives/"), {"file": upload, **fields}, format="multipart"
    )


def test_a_zip_stores_each_nifti_and_says_what_became_of_every_member(world, stored_files):
    existing = factories.add_scan(world, seed=50)
    raw = _zip(
        {
            "batch/sub-01.nii.gz": _nifti(1),
            "batch/sub-02.nii.gz": _nifti(2),
            "batch/broken.nii.gz": b"\x1f\x8b not a nifti at all",
            "batch/again.nii.gz": factories.nifti_bytes(factories.image_array(seed=50), factories.AFFINE),
            "README.txt": b"scans from site A",
            "__MACOSX/batch/._sub-01.nii.gz": b"apple double",
        }
    )
    response = _post_zip(world, raw, site="SITE-A", sequence="T1w", split="train")
    assert response.status_code == 200, response.json()
    body = response.json()
    results = {r["name"]: r for r in body["results"]}
    assert set(results) == {
        "batch/sub-01.nii.gz",
        "batch/sub-02.nii.gz",
        "batch/broken.nii.gz",
        "batch/again.nii.gz",
        "README.txt",
    }
    assert results["batch/sub-01.nii.gz"]["status"] == "stored"
    assert (
        results["batch/again.nii.gz"]["status"] == "duplicate" and results["batch/again.nii.gz"]["scan"] == existing.pk
    )
    assert results["batch/broken.nii.gz"]["status"] == "refused" and results["batch/broken.nii.gz"]["detail"]
    assert results["README.txt"]["error"] == "not_nifti"
    assert (body["stored"], body["duplicate"], body["refused"]) == (2, 1, 2)
    stored = Scan.objects.filter(pk__in=[results[n]["scan"] for n in ("batch/sub-01.nii.gz", "batch/sub-02.nii.gz")])
    assert {(s.original_filename, s.site, s.sequence, s.split) for s in stored} == {
        ("sub-01.nii.gz", "SITE-A", "T1w", "train"),
        ("sub-02.nii.gz", "SITE-A", "T1w", "train"),
    }
    assert len([f for f in stored_files() if f.startswith("scans/")]) == 3  # the broken one left nothing


def _zip_with_entry(name: str, data: bytes, *, symlink: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.nii.gz", _nifti(1))
        info = zipfile.ZipInfo(name)
        if symlink:
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("raw_factory", "code"),
    [
        (lambda: _zip_with_entry("../../etc/evil.nii.gz", _nifti(3)), "unsafe_path"),
        (lambda: _zip_with_entry("/abs/evil.nii.gz", _nifti(3)), "unsafe_path"),
        (lambda: _zip_with_entry("dir\\evil.nii.gz", _nifti(3)), "unsafe_path"),
        (lambda: _zip_with_entry("link.nii.gz", b"/etc/passwd", symlink=True), "unsafe_path"),
        (lambda: _zip({f"s{i}.nii.gz": b"x" for i in range(6)}), "too_many_members"),
        (lambda: _zip({"ok.nii.gz": _nifti(1), "bomb.nii": bytes(MAX_RATIO * 2 * 1024 * 1024)}), "zip_bomb"),
        (lambda: b"PK\x03\x04 this is not really a zip", "not_a_zip"),
        (lambda: _nifti(1), "not_a_zip"),
    ],
)
def test_an_unsafe_zip_is_refused_whole_before_anything_is_stored(world, stored_files, settings, raw_factory, code):
    settings.MRIANNOT_MAX_ARCHIVE_MEMBERS = 5
    response = _post_zip(world, raw_factory())
    assert response.status_code == 400, response.json()
    assert response.json()["error"] == code and response.json()["detail"]
    assert not Scan.objects.exists() and stored_files() == []


def test_a_zip_over_the_declared_limits_is_refused_whole(world, stored_files, settings):
    settings.MRIANNOT_MAX_ARCHIVE_BYTES = 2 * len(_nifti(1)) - 1  # inflated, the two members are one byte over
    raw = _zip({"a.nii.gz": _nifti(1), "b.nii.gz": _nifti(1)[:-1] + b"\x00"}, compression=zipfile.ZIP_STORED)
    response = _post_zip(world, raw)
    assert response.status_code == 400 and response.json()["error"] == "too_large"
    settings.MRIANNOT_MAX_ARCHIVE_BYTES = 10**9
    # One member (a plain .nii of 256 KiB of zeros, a few KiB deflated) over the per-file limit,
    # though the archive itself is far under it.
    plain = factories.nifti_bytes(np.zeros((64, 64, 64), np.uint8), gzip=False)
    settings.MRIANNOT_MAX_UPLOAD_BYTES = 100_000
    raw = _zip({"a.nii": plain})
    assert len(raw) < 100_000 < len(plain)
    response = _post_zip(world, raw)
    assert response.status_code == 400 and response.json()["error"] == "too_large"
    assert not Scan.objects.exists() and stored_files() == []


def test_a_member_that_inflates_past_its_declared_size_is_refused_not_read_whole(world, stored_files):
    """A zip whose directory says 1 KiB but whose data inflates to 8 MiB: the read stops at the
    declared size and the CRC check refuses the member; the good member is stored."""
    good = _nifti(1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good.nii.gz", good)
        archive.writestr("liar.nii", bytes(8 * 1024 * 1024))
    raw = bytearray(buffer.getvalue())
    # Rewrite the liar's declared size (local header and central directory) to 1024 bytes.
    declared = (8 * 1024 * 1024).to_bytes(4, "little")
    assert raw.count(declared) == 2
    raw = bytes(raw).replace(declared, (1024).to_bytes(4, "little"))
    response = _post_zip(world, raw)
    assert response.status_code == 200, response.json()
    results = {r["name"]: r for r in response.json()["results"]}
    assert results["good.nii.gz"]["status"] == "stored"
    assert results["liar.nii"]["status"] == "refused"
    assert Scan.objects.count() == 1


# --- who may -------------------------------------------------------------------------------------


def test_annotators_are_refused_every_scan_console_action(world, stored_files):
    scan = _scans(world, 1)[0]
    rater = scan.assignments.first().annotator
    client = world.client(rater)
    assert _upload(world, _nifti(5), user=rater).status_code == 403
    assert _post_zip(world, _zip({"a.nii.gz": _nifti(6)}), user=rater).status_code == 403
    assert _csv(world, f"scan,site\n{scan.pk},SITE-A\n", apply=True, user=rater).status_code == 403
    assert client.get(_url(world, "scan-metadata/")).status_code == 403
    assert client.post(_url(world, "splits/preview/"), RULE, format="json").status_code == 403
    assert client.post(_url(world, "splits/"), RULE, format="json").status_code == 403
    assert client.patch(f"/api/v1/scans/{scan.pk}/", {"split": "train"}, format="json").status_code == 403
    outsider = world.client(world.outsider)
    assert outsider.post(_url(world, "splits/"), RULE, format="json").status_code == 404
    assert Scan.objects.get(pk=scan.pk).split == Split.UNASSIGNED and Scan.objects.count() == 1
