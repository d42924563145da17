"""A lead runs a project from the browser: the APIs and services behind the projects, settings,
people and project home pages (label schema rules, pre-label policy, members and their open
work, reassignment, one more rater for a scan, accounts, the figures), and their audit events."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from rest_framework.test import APIClient

from labeling import selectors, services
from labeling.models import (
    AnnotationRevision,
    Assignment,
    AssignmentStatus,
    AuditEvent,
    LabelClass,
    Membership,
    PrelabelPolicy,
    Project,
    Role,
    ScanStatus,
)
from mriannot.errors import Conflict, NotAllowed, ValidationFailed
from tests import factories

pytestmark = pytest.mark.django_db


def _labels(values=(1, 2), shape=(12, 10, 8)) -> bytes:
    return factories.nifti_bytes(factories.label_array(shape=shape, values=values), factories.AFFINE)


def _save(assignment, values=(1, 2)):
    revision, _ = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=_labels(values), base_revision_id=None
    )
    return revision


def _events(project, action):
    return list(AuditEvent.objects.filter(project=project, action=action).order_by("id"))


# --- pre-label policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raters", "expected"), [(1, PrelabelPolicy.APPLIED), (2, PrelabelPolicy.OFFERED), (5, PrelabelPolicy.OFFERED)]
)
def test_a_new_project_offers_prelabels_to_a_panel_and_applies_them_for_a_single_rater(raters, expected):
    lead = factories.UserFactory(username="lead")
    project = services.project_create(actor=lead, name=f"P{raters}", raters_per_scan=raters)
    assert project.prelabel_policy == expected
    chosen = services.project_create(actor=lead, name=f"Q{raters}", raters_per_scan=raters, prelabel_policy="off")
    assert chosen.prelabel_policy == "off"


def test_the_api_creates_a_project_with_the_default_policy_and_refuses_an_unknown_one(world):
    client = world.client(world.lead)
    response = client.post("/api/v1/projects/", {"name": "Solo", "raters_per_scan": 1}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["prelabel_policy"] == "applied"
    assert "al_offer_prelabels" not in response.json()
    refused = client.post("/api/v1/projects/", {"name": "Other", "prelabel_policy": "always"}, format="json")
    assert refused.status_code == 400 and "prelabel_policy" in refused.json()["fields"]


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_the_boolean_into_a_policy_and_numbers_the_label_keys():
    before = [("labeling", "0005_api_tokens")]
    after = [("labeling", "0006_prelabel_policy_label_keys")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldProject = old.get_model("labeling", "Project")
    OldLabel = old.get_model("labeling", "LabelClass")
    offered = OldProject.objects.create(name="was on", al_offer_prelabels=True)
    off = OldProject.objects.create(name="was off", al_offer_prelabels=False)
    for value in (7, 2, 5):
        OldLabel.objects.create(project=offered, value=value, name=f"L{value}", color="#112233")

    executor = MigrationExecutor(connection)
    executor.migrate(after)
    new = executor.loader.project_state(after).apps
    NewProject = new.get_model("labeling", "Project")
    NewLabel = new.get_model("labeling", "LabelClass")
    assert NewProject.objects.get(pk=offered.pk).prelabel_policy == "offered"
    assert NewProject.objects.get(pk=off.pk).prelabel_policy == "off"
    keys = list(NewLabel.objects.filter(project_id=offered.pk).order_by("value").values_list("value", "key"))
    assert keys == [(2, 1), (5, 2), (7, 3)]

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # back to the latest schema for the next tests


def _score_with_prelabel(scan):
    from active_learning.models import ModelVersion, ScanScore

    version = ModelVersion.objects.create(project=scan.project, version=1, status="done")
    name = default_storage.save(f"prelabels/{scan.pk}/1.nii.gz", ContentFile(_labels((1,))))
    return ScanScore.objects.create(scan=scan, model_version=version, strategy="entropy", score=1.0, prelabel=name)


@pytest.mark.parametrize(("policy", "status"), [("offered", 200), ("applied", 200), ("off", 404)])
def test_the_viewer_is_told_the_policy_and_gets_a_prelabel_unless_it_is_off(world, policy, status):
    scan = factories.add_scan(world)
    _score_with_prelabel(scan)
    services.project_update(project=world.project, actor=world.lead, prelabel_policy=policy)
    assignment = scan.assignments.first()
    client = world.client(assignment.annotator)
    assert client.get(f"/api/v1/assignments/{assignment.pk}/").json()["prelabel_policy"] == policy
    response = client.get(f"/api/v1/assignments/{assignment.pk}/prelabel/")
    assert response.status_code == status


def test_a_revision_records_that_it_started_from_the_model_unless_the_policy_is_off(world):
    scan = factories.add_scan(world)
    first, second = scan.assignments.order_by("id")
    revision, _ = services.revision_create(
        assignment=first, actor=first.annotator, raw=_labels(), base_revision_id=None, source="prelabel"
    )
    assert revision.source == "prelabel"
    services.project_update(project=world.project, actor=world.lead, prelabel_policy="off")
    with pytest.raises(ValidationFailed, match="policy is off"):
        services.revision_create(
            assignment=second, actor=second.annotator, raw=_labels(), base_revision_id=None, source="prelabel"
        )
    assert not AnnotationRevision.objects.filter(assignment=second).exists()


# --- project settings ------------------------------------------------------------------------


def test_a_settings_change_is_audited_with_the_fields_that_changed(world):
    client = world.client(world.lead)
    response = client.patch(
        f"/api/v1/projects/{world.project.pk}/",
        {
            "name": "Renamed",
            "raters_per_scan": 2,  # unchanged
            "prelabel_policy": "applied",
            "flag_min_label_dice": None,
            "flag_max_rater_gap": 0.3,
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["name"], body["prelabel_policy"], body["flag_min_label_dice"]) == ("Renamed", "applied", None)
    [event] = _events(world.project, "project.update")
    assert event.data["changed"] == ["flag_max_rater_gap", "flag_min_label_dice", "name", "prelabel_policy"]
    assert event.data["previous"] == {
        "name": "Test project",
        "prelabel_policy": "offered",
        "flag_min_label_dice": 0.5,
        "flag_max_rater_gap": 0.25,
    }
    assert event.data["name"] == "Renamed" and event.actor_username == "lead"
    # The same values again change nothing and write no event.
    assert client.patch(f"/api/v1/projects/{world.project.pk}/", {"name": "Renamed"}, format="json").status_code == 200
    assert len(_events(world.project, "project.update")) == 1


def test_annotators_cannot_change_settings_or_labels(world):
    client = world.client(world.annotators[0])
    project = world.project.pk
    label = world.project.label_classes.first()
    label_url = f"/api/v1/projects/{project}/labels/{label.pk}/"
    assert client.patch(f"/api/v1/projects/{project}/", {"name": "Mine"}, format="json").status_code == 403
    assert client.patch(label_url, {"name": "X"}, format="json").status_code == 403
    assert client.delete(label_url).status_code == 403
    assert (
        client.post(
            f"/api/v1/projects/{project}/labels/", {"value": 9, "name": "T", "color": "#ff0000"}, format="json"
        ).status_code
        == 403
    )
    world.project.refresh_from_db()
    assert world.project.name == "Test project"


def test_label_values_are_fixed_once_a_rater_has_saved_labels(world):
    client = world.client(world.lead)
    base = f"/api/v1/projects/{world.project.pk}/labels/"
    csf, grey, white = world.project.label_classes.order_by("value")
    # Before any save: a value may change and a label may go.
    assert client.patch(f"{base}{white.pk}/", {"value": 30}, format="json").json()["value"] == 30
    assert client.delete(f"{base}{white.pk}/").status_code == 204

    scan = factories.add_scan(world)
    _save(scan.assignments.first(), values=(1,))  # label 2 is not even drawn
    assert client.get(f"/api/v1/projects/{world.project.pk}/summary/").json()["schema_locked"] is True

    changed = client.patch(f"{base}{grey.pk}/", {"value": 7}, format="json")
    assert changed.status_code == 409 and changed.json()["error"] == "schema_locked"
    gone = client.delete(f"{base}{grey.pk}/")
    assert gone.status_code == 409 and gone.json()["error"] == "schema_locked"
    # Names, colours and keys still change; a new value can be added.
    renamed = client.patch(f"{base}{grey.pk}/", {"name": "Cortex", "color": "#00aa00"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["value"] == 2
    assert client.post(base, {"value": 4, "name": "Lesion", "color": "#ff0000"}, format="json").status_code == 201
    taken = client.post(base, {"value": 1, "name": "Again", "color": "#ff0000"}, format="json")
    assert taken.status_code == 409
    assert sorted(LabelClass.objects.filter(project=world.project).values_list("value", "name")) == [
        (1, "CSF"),
        (2, "Cortex"),
        (4, "Lesion"),
    ]
    assert [e.data["value"] for e in _events(world.project, "label.delete")] == [30]
    update = _events(world.project, "label.update")[-1]
    assert update.data["previous"] == {"name": "Grey matter", "color": "#999999"}
    assert update.target_id == str(grey.pk) and csf.value == 1


def test_label_keys_are_given_in_order_swapped_on_demand_and_only_1_to_9(world):
    client = world.client(world.lead)
    base = f"/api/v1/projects/{world.project.pk}/labels/"
    assert [(lab["value"], lab["key"]) for lab in client.get(base).json()] == [(1, 1), (2, 2), (3, 3)]
    fourth = client.post(base, {"value": 8, "name": "Lesion", "color": "#ff0000"}, format="json").json()
    assert fourth["key"] == 4
    csf = world.project.label_classes.get(value=1)
    swapped = client.patch(f"{base}{csf.pk}/", {"key": 4}, format="json")
    assert swapped.status_code == 200 and swapped.json()["key"] == 4
    keys = {lab["value"]: lab["key"] for lab in client.get(base).json()}
    assert keys == {1: 4, 2: 2, 3: 3, 8: 1}
    assert client.patch(f"{base}{csf.pk}/", {"key": 10}, format="json").status_code == 400
    assert client.post(base, {"value": 9, "name": "X", "color": "#ff0000", "key": 2}, format="json").status_code == 409
    with pytest.raises(ValidationFailed):
        services.label_class_create(project=world.project, actor=world.lead, value=9, name="X", color="#000000", key=0)


# --- people ------------------------------------------------------------------------------------


def test_removing_a_member_hands_their_open_work_to_the_least_loaded_and_keeps_what_they_submitted(world):
    rater1, rater2, rater3 = world.annotators
    scans = [factories.add_scan(world, seed=i) for i in range(3)]  # 6 assignments over 3 annotators: 2 each
    mine = list(Assignment.objects.filter(annotator=rater1).order_by("id"))
    assert len(mine) == 2
    submitted, in_progress = mine
    _save(submitted)
    services.assignment_submit(assignment=submitted, actor=rater1)
    draft = _save(in_progress)
    # The one annotator who does not rate that scan yet takes it over.
    raters = set(Assignment.objects.filter(scan=in_progress.scan).values_list("annotator_id", flat=True))
    [expected] = [u for u in (rater2, rater3) if u.pk not in raters]

    membership = Membership.objects.get(project=world.project, user=rater1)
    response = world.client(world.lead).delete(f"/api/v1/projects/{world.project.pk}/members/{membership.pk}/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["deleted"] == []
    [moved] = body["reassigned"]
    in_progress.refresh_from_db()
    assert moved == {"assignment": in_progress.pk, "annotator": in_progress.annotator.username}
    assert in_progress.annotator_id == expected.pk
    assert in_progress.status == AssignmentStatus.IN_PROGRESS
    assert selectors.assignment_head(assignment=in_progress) == draft  # the draft goes with it
    # What they submitted stays theirs; they no longer see any of it.
    submitted.refresh_from_db()
    assert (submitted.annotator_id, submitted.status) == (rater1.pk, AssignmentStatus.SUBMITTED)
    assert not Membership.objects.filter(project=world.project, user=rater1).exists()
    assert not selectors.worklist(user=rater1).exists()
    assert world.client(rater1).get(f"/api/v1/assignments/{submitted.pk}/").status_code == 404
    assert world.client(rater1).get(f"/api/v1/revisions/{draft.pk}/").status_code == 404

    [reassign] = _events(world.project, "assignment.reassign")
    assert reassign.data["from"] == "rater1" and reassign.data["reason"] == "member_removed"
    assert reassign.data["revisions"] == 1
    [removed] = _events(world.project, "member.remove")
    assert removed.data["reassigned"] == [in_progress.pk] and removed.actor_username == "lead"
    assert len(scans) == 3


def test_the_open_work_of_a_leaver_goes_to_the_least_loaded_annotator():
    world = factories.make_world(raters_per_scan=1, n_annotators=3)
    rater1, rater2, rater3 = world.annotators
    scans = [factories.add_scan(world, seed=i) for i in range(4)]  # one rater each: r1, r2, r3, r1
    assert [s.assignments.get().annotator for s in scans] == [rater1, rater2, rater3, rater1]
    services.scan_rater_add(scan=scans[0], actor=world.lead, annotator=rater3)  # r3 now has 2 open, r2 has 1
    handed = services.membership_remove(
        membership=Membership.objects.get(project=world.project, user=rater1), actor=world.lead
    )
    # scans[0]: rater3 rates it already, so rater2; scans[3]: rater2 (2 open now) and rater3 (2): the lower id.
    assert [name for _, name in handed["reassigned"]] == ["rater2", "rater2"]
    assert selectors.annotator_load(project=world.project) == {rater2.pk: 3, rater3.pk: 2}


def test_with_no_one_to_take_over_untouched_work_is_dropped_and_saved_work_blocks_the_removal():
    world = factories.make_world(raters_per_scan=2, n_annotators=2)
    rater1, rater2 = world.annotators
    scan = factories.add_scan(world)
    mine = scan.assignments.get(annotator=rater1)
    membership = Membership.objects.get(project=world.project, user=rater1)

    _save(mine)
    with pytest.raises(Conflict, match="no other annotator") as refused:
        services.membership_remove(membership=membership, actor=world.lead)
    assert refused.value.code == "no_one_to_hand_over"
    assert Membership.objects.filter(pk=membership.pk).exists()

    other = factories.add_scan(world, seed=1)
    untouched = list(Assignment.objects.filter(annotator=rater2).order_by("id").values_list("pk", flat=True))
    assert len(untouched) == 2  # nothing saved on either scan by rater2
    handed = services.membership_remove(
        membership=Membership.objects.get(project=world.project, user=rater2), actor=world.lead
    )
    assert handed == {"reassigned": [], "deleted": untouched}
    assert not Assignment.objects.filter(pk__in=untouched).exists()
    deleted = _events(world.project, "assignment.delete")
    assert [e.data for e in deleted] == [
        {"scan": scan.pk, "annotator": "rater2", "reason": "member_removed"},
        {"scan": other.pk, "annotator": "rater2", "reason": "member_removed"},
    ]
    # A newcomer gets the scans that lost their rater.
    newcomer = factories.UserFactory(username="newcomer")
    services.membership_set(project=world.project, actor=world.lead, user=newcomer, role=Role.ANNOTATOR)
    assert (
        other.assignments.filter(annotator=newcomer).exists() and scan.assignments.filter(annotator=newcomer).exists()
    )


def test_a_rater_who_becomes_lead_hands_over_their_open_scans_and_the_last_lead_stays(world):
    rater1 = world.annotators[0]
    factories.add_scan(world)
    factories.add_scan(world, seed=1)
    open_before = Assignment.objects.filter(annotator=rater1).count()
    assert open_before > 0
    membership = Membership.objects.get(project=world.project, user=rater1)
    client = world.client(world.lead)
    url = f"/api/v1/projects/{world.project.pk}/members/{membership.pk}/"
    response = client.patch(url, {"role": "lead"}, format="json")
    assert response.status_code == 200 and response.json()["role"] == "lead"
    assert not Assignment.objects.filter(annotator=rater1).exists()
    assert len(_events(world.project, "assignment.reassign")) == open_before
    change = _events(world.project, "member.role_change")[-1]
    assert change.data == {"user": "rater1", "role": "lead", "previous_role": "annotator"}

    lead_membership = Membership.objects.get(project=world.project, user=world.lead)
    client.patch(url, {"role": "annotator"}, format="json")
    last = client.patch(
        f"/api/v1/projects/{world.project.pk}/members/{lead_membership.pk}/", {"role": "annotator"}, format="json"
    )
    assert last.status_code == 409 and last.json()["error"] == "last_lead"
    assert world.client(world.annotators[1]).patch(url, {"role": "lead"}, format="json").status_code == 403


def test_a_lead_reassigns_an_open_assignment_to_a_free_annotator(world):
    scan = factories.add_scan(world)
    raters = set(scan.assignments.values_list("annotator_id", flat=True))
    [free] = [u for u in world.annotators if u.pk not in raters]
    assignment, other = scan.assignments.order_by("id")
    client = world.client(world.lead)
    url = f"/api/v1/assignments/{assignment.pk}/reassign/"

    assert world.client(assignment.annotator).post(url, {"annotator": free.username}, format="json").status_code == 403
    busy = client.post(url, {"annotator": other.annotator.username}, format="json")
    assert busy.status_code == 409 and busy.json()["error"] == "already_rates"
    stranger = client.post(url, {"annotator": "outsider"}, format="json")
    assert stranger.status_code == 400 and stranger.json()["error"] == "not_a_member"
    lead = client.post(url, {"annotator": "lead"}, format="json")
    assert lead.status_code == 400 and lead.json()["error"] == "not_an_annotator"

    previous = assignment.annotator.username
    moved = client.post(url, {"annotator": free.username}, format="json")
    assert moved.status_code == 200 and moved.json()["annotator"] == free.username
    [event] = _events(world.project, "assignment.reassign")
    assert (event.data["from"], event.data["to"], event.data["reason"]) == (previous, free.username, "lead")

    _save(other)
    services.assignment_submit(assignment=other, actor=other.annotator)
    done = client.post(f"/api/v1/assignments/{other.pk}/reassign/", {"annotator": previous}, format="json")
    assert done.status_code == 409 and done.json()["error"] == "submitted"


# --- one more rater for a scan -------------------------------------------------------------------


def test_an_extra_rater_reopens_the_scan_and_its_consensus_runs_again_on_every_rater(world):
    from consensus import services as consensus_services
    from consensus.models import ConsensusRun, GroundTruth

    shape = (24, 20, 16)
    truth = factories.sphere_truth(shape)
    scan = factories.add_scan(world, shape=shape)
    factories.submit_panel(world, scan, [truth, truth])
    [first_run] = ConsensusRun.objects.filter(scan=scan)
    consensus_services.consensus_run_execute(run_id=first_run.pk)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.GROUND_TRUTH  # two raters who agree: the consensus is the truth
    first_truth = GroundTruth.objects.get(scan=scan)

    raters = set(scan.assignments.values_list("annotator_id", flat=True))
    [third] = [u for u in world.annotators if u.pk not in raters]
    assert world.client(third).post(f"/api/v1/scans/{scan.pk}/raters/", {}, format="json").status_code == 404
    response = world.client(world.lead).post(f"/api/v1/scans/{scan.pk}/raters/", {}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["annotator"] == third.username  # the only free annotator
    scan.refresh_from_db()
    assert scan.status == ScanStatus.IN_PROGRESS
    [event] = [e for e in _events(world.project, "assignment.create") if e.data.get("extra_rater")]
    assert event.data["scan_status_before"] == "ground_truth" and event.data["reopened"] is True
    again = world.client(world.lead).post(f"/api/v1/scans/{scan.pk}/raters/", {}, format="json")
    assert again.status_code == 409 and again.json()["error"] == "no_free_annotator"

    new = scan.assignments.get(annotator=third)
    raw = factories.nifti_bytes(truth, np.asarray(scan.affine, dtype=float))
    services.revision_create(assignment=new, actor=third, raw=raw, base_revision_id=None)
    services.assignment_submit(assignment=new, actor=third)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.SUBMITTED
    second_run = ConsensusRun.objects.filter(scan=scan).exclude(pk=first_run.pk).get()
    assert len(second_run.revision_ids) == 3
    consensus_services.consensus_run_execute(run_id=second_run.pk)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.GROUND_TRUTH
    latest = GroundTruth.objects.filter(scan=scan).order_by("-id").first()
    assert latest.run_id == second_run.pk and latest.supersedes_id == first_truth.pk


def test_an_extra_rater_is_waited_for_before_the_consensus(world):
    """Added while the scan is still being rated: the scan is complete only when every rater submitted."""
    scan = factories.add_scan(world)
    first, second = scan.assignments.order_by("id")
    services.scan_rater_add(scan=scan, actor=world.lead)
    for assignment in (first, second):
        _save(assignment)
        services.assignment_submit(assignment=assignment, actor=assignment.annotator)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.IN_PROGRESS
    third = scan.assignments.exclude(pk__in=[first.pk, second.pk]).get()
    _save(third)
    services.assignment_submit(assignment=third, actor=third.annotator)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.SUBMITTED


# --- accounts ------------------------------------------------------------------------------------


def test_only_site_admins_create_accounts_with_a_password_that_passes_the_validators(world):
    body = {"username": "newrater", "password": "a-long-and-unusual-passphrase-42", "email": "new@example.org"}
    assert world.client(world.lead).post("/api/v1/users/", body, format="json").status_code == 403
    assert world.client(world.annotators[0]).post("/api/v1/users/", body, format="json").status_code == 403
    with pytest.raises(NotAllowed):
        services.user_create(actor=world.lead, username="x", password=body["password"])

    admin = world.client(world.site_admin)
    for weak in ("short", "12345678901234", "password1234", "newrater2026"):
        response = admin.post("/api/v1/users/", {**body, "password": weak}, format="json")
        assert response.status_code == 400, weak
        assert response.json()["error"] == "weak_password" and response.json()["messages"]
    bad_name = admin.post("/api/v1/users/", {**body, "username": "no spaces please"}, format="json")
    assert bad_name.status_code == 400 and bad_name.json()["error"] == "invalid_username"

    created = admin.post("/api/v1/users/", body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["username"] == "newrater" and "password" not in created.json()
    assert admin.post("/api/v1/users/", body, format="json").status_code == 409
    event = AuditEvent.objects.get(action="user.create")
    assert event.actor_username == "siteadmin" and event.data == {"username": "newrater", "email": "new@example.org"}
    assert "password" not in str(event.data)
    # The account logs in (through the API's log-in), and a lead adds it by username.
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(username="newrater").check_password(body["password"])
    login = APIClient(enforce_csrf_checks=False).post(
        "/api/v1/auth/token/", {"username": "newrater", "password": body["password"]}, format="json"
    )
    assert login.status_code == 200, login.json()
    added = world.client(world.lead).post(
        f"/api/v1/projects/{world.project.pk}/members/", {"username": "newrater", "role": "annotator"}, format="json"
    )
    assert added.status_code == 201


# --- figures -------------------------------------------------------------------------------------


def test_rater_figures_count_open_work_and_time_a_scan_from_the_first_save_to_the_submission(world):
    raters_url = f"/api/v1/projects/{world.project.pk}/raters/"
    for seed in range(4):  # 8 assignments, least-loaded first: rater1 and rater2 get 3, rater3 2
        factories.add_scan(world, seed=seed)
    rater = world.annotators[0]
    mine = list(Assignment.objects.filter(annotator=rater).order_by("id"))
    assert len(mine) == 3
    start = timezone.now().replace(hour=8, minute=0, second=0, microsecond=0) - dt.timedelta(days=3)
    # Two scans submitted on one day (10 and 30 minutes of work), one on the next day (20 minutes).
    plan = [(start, 10), (start + dt.timedelta(hours=2), 30), (start + dt.timedelta(days=1), 20)]
    for assignment, (began, minutes) in zip(mine, plan, strict=True):
        revision = _save(assignment)
        services.assignment_submit(assignment=assignment, actor=rater)
        AnnotationRevision.objects.filter(pk=revision.pk).update(created_at=began)
        Assignment.objects.filter(pk=assignment.pk).update(submitted_at=began + dt.timedelta(minutes=minutes))
    rows = {r["username"]: r for r in world.client(world.lead).get(raters_url).json()}
    mine_row = rows["rater1"]
    assert (mine_row["todo"], mine_row["in_progress"], mine_row["open"], mine_row["submitted"]) == (0, 0, 0, 3)
    assert mine_row["median_seconds_per_scan"] == 20 * 60  # median of 10, 30 and 20 minutes
    assert mine_row["scans_per_day"] == pytest.approx(1.5)  # 3 scans on 2 days
    other = world.annotators[1]
    _save(Assignment.objects.filter(annotator=other).first())
    rows = {r["username"]: r for r in world.client(world.lead).get(raters_url).json()}
    assert (rows["rater2"]["todo"], rows["rater2"]["in_progress"], rows["rater2"]["submitted"]) == (2, 1, 0)
    assert rows["rater2"]["median_seconds_per_scan"] is None and rows["rater2"]["scans_per_day"] is None
    assert set(rows) == {"rater1", "rater2", "rater3"} and rows["rater3"]["role"] == "annotator"
    assert world.client(rater).get(f"/api/v1/projects/{world.project.pk}/raters/").status_code == 403


def test_the_home_counts_and_the_projects_list_progress(world):
    from consensus import services as consensus_services
    from consensus.models import ConsensusRun

    shape = (24, 20, 16)
    truth = factories.sphere_truth(shape)
    done = factories.add_scan(world, shape=shape, seed=1)
    factories.submit_panel(world, done, [truth, truth])
    consensus_services.consensus_run_execute(run_id=ConsensusRun.objects.get(scan=done).pk)
    started = factories.add_scan(world, seed=2)
    _save(started.assignments.first())
    factories.add_scan(world, seed=3)

    client = world.client(world.lead)
    summary = client.get(f"/api/v1/projects/{world.project.pk}/summary/").json()
    assert {k: summary[k] for k in ("scans", "labelled", "submitted", "flagged", "ground_truth")} == {
        "scans": 3,
        "labelled": 2,
        "submitted": 1,
        "flagged": 0,
        "ground_truth": 1,
    }
    assert summary["progress"] == pytest.approx(1 / 3)
    assert summary["assignments"] == {"total": 6, "open": 4, "submitted": 2}
    assert summary["members"] == {"annotator": 3, "lead": 1, "admin": 0}
    assert world.client(world.annotators[0]).get(f"/api/v1/projects/{world.project.pk}/summary/").status_code == 403

    [listed] = client.get("/api/v1/projects/").json()
    assert listed["progress"] == {
        "scans": 3,
        "done": 1,
        "fraction": pytest.approx(1 / 3),
        "of": "scans with a ground truth",
    }
    rater = world.annotators[0]
    theirs = Assignment.objects.filter(annotator=rater)
    [seen] = world.client(rater).get("/api/v1/projects/").json()
    assert seen["my_role"] == "annotator"
    assert seen["progress"]["scans"] == theirs.count()
    assert seen["progress"]["done"] == theirs.filter(status=AssignmentStatus.SUBMITTED).count()
    assert Project.objects.count() == 1
