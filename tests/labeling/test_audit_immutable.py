"""The audit trail stays true: events keep who did what after the user or the project is
deleted, and nothing changes or removes an event (the model, the admin, the database)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, migrations, models, transaction
from django.db.migrations.loader import MigrationLoader
from django.test import Client

from labeling import audit_triggers, services
from labeling.models import AuditEvent, Project, Role
from tests import factories

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", "root@example.org", factories.PASSWORD)


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_new_events_copy_the_actors_username(world):
    by_lead = services.audit_log(actor=world.lead, project=world.project, action="test.lead", target=world.project)
    by_system = services.audit_log(actor=None, project=world.project, action="test.system", target=world.project)
    assert AuditEvent.objects.get(pk=by_lead.pk).actor_username == "lead"
    assert AuditEvent.objects.get(pk=by_system.pk).actor_username == ""


def test_deleting_a_user_in_the_admin_keeps_their_events(world, superuser):
    """Before: on_delete=SET_NULL rewrote the events' actor to NULL and the API showed null."""
    leaver = factories.UserFactory(username="leaver")
    services.membership_set(project=world.project, actor=world.lead, user=leaver, role=Role.LEAD)
    services.project_update(project=world.project, actor=leaver, description="written by the leaver")
    event = AuditEvent.objects.get(action="project.update")
    leaver_id = leaver.pk

    admin = admin_client(superuser)
    response = admin.post(f"/admin/auth/user/{leaver_id}/delete/", {"post": "yes"})
    assert response.status_code == 302, response.content[:2000]
    assert not User.objects.filter(pk=leaver_id).exists()

    event = AuditEvent.objects.get(pk=event.pk)
    assert (event.actor_id, event.actor_username) == (leaver_id, "leaver")
    listed = world.client(world.lead).get(f"/api/v1/projects/{world.project.pk}/audit/").json()
    assert [e["actor"] for e in listed if e["action"] == "project.update"] == ["leaver"]
    assert [e["actor"] for e in listed if e["action"] == "project.create"] == ["lead"]
    page = admin.get("/admin/labeling/auditevent/")
    assert page.status_code == 200
    assert b"leaver" in page.content


def test_deleting_a_project_keeps_its_events(world):
    project_id = world.project.pk
    before = sorted(AuditEvent.objects.filter(project_id=project_id).values_list("pk", flat=True))
    assert before

    Project.objects.get(pk=project_id).delete()

    assert not Project.objects.filter(pk=project_id).exists()
    after = sorted(AuditEvent.objects.filter(project_id=project_id).values_list("pk", flat=True))
    assert after == before


def test_the_model_refuses_to_change_or_delete_an_event(world):
    event = AuditEvent.objects.get(action="project.create")
    event.action = "rewritten"
    with pytest.raises(RuntimeError, match="immutable"):
        event.save()
    with pytest.raises(RuntimeError, match="never deleted"):
        event.delete()
    with pytest.raises(RuntimeError, match="immutable"):
        AuditEvent.objects.filter(pk=event.pk).update(action="rewritten")
    with pytest.raises(RuntimeError, match="never deleted"):
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "project.create"


def test_the_database_refuses_to_change_or_delete_an_event(world):
    """Whatever bypasses the model (a plain queryset, raw SQL) meets the triggers."""
    event = AuditEvent.objects.get(action="project.create")
    plain = models.QuerySet(model=AuditEvent).filter(pk=event.pk)  # no refusing manager
    table = AuditEvent._meta.db_table
    attempts = [
        lambda: plain.update(action="rewritten"),
        lambda: plain.update(actor=None),
        lambda: plain.delete(),
        lambda: connection.cursor().execute(f"UPDATE {table} SET actor_username = 'someone' WHERE id = %s", [event.pk]),
        lambda: connection.cursor().execute(f"DELETE FROM {table} WHERE id = %s", [event.pk]),
        lambda: connection.cursor().execute(f"DELETE FROM {table}"),
    ]
    for attempt in attempts:
        with pytest.raises(IntegrityError, match="audit events are"), transaction.atomic():
            attempt()
    event.refresh_from_db()
    assert (event.action, event.actor_id, event.actor_username) == ("project.create", world.lead.pk, "lead")
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_the_migrated_database_has_the_triggers():
    expected = {
        "sqlite": {f"{audit_triggers.TABLE}_no_update", f"{audit_triggers.TABLE}_no_delete"},
        "postgresql": {f"{audit_triggers.TABLE}_no_change", f"{audit_triggers.TABLE}_no_truncate"},
    }
    assert audit_triggers.installed(connection) == expected[connection.vendor]


def test_the_admin_only_shows_events(world, superuser):
    event = AuditEvent.objects.get(action="project.create")
    admin = admin_client(superuser)
    page = admin.get(f"/admin/labeling/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b"lead" in page.content
    assert b'name="_save"' not in page.content
    assert admin.post(f"/admin/labeling/auditevent/{event.pk}/change/", {"action": "rewritten"}).status_code == 403
    assert admin.post(f"/admin/labeling/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin.get("/admin/labeling/auditevent/add/").status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).action == "project.create"


def _migration_code(name: str):
    """A RunPython function of a labeling migration, and the app state after that migration
    (found by the function's name, so renumbering the migration does not break this test)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    for (app, migration_name), migration in loader.disk_migrations.items():
        for operation in migration.operations if app == "labeling" else []:
            if isinstance(operation, migrations.RunPython) and operation.code.__name__ == name:
                return operation.code, loader.project_state((app, migration_name)).apps
    raise LookupError(name)


def test_the_migration_fills_the_username_of_existing_events(world):
    fill, state = _migration_code("fill_actor_usernames")
    target = {"project": world.project, "target_type": "project", "target_id": str(world.project.pk)}
    rows = [AuditEvent(actor=world.lead, action="old.lead", **target), AuditEvent(action="old.system", **target)]
    old = AuditEvent.objects.bulk_create(rows)  # bulk_create skips save(): rows as before the column
    assert [e.actor_username for e in old] == ["", ""]
    audit_triggers.remove(connection)  # the migration fills the rows before it installs them
    fill(state, None)
    audit_triggers.install(connection)
    filled = dict(AuditEvent.objects.filter(action__startswith="old.").values_list("action", "actor_username"))
    assert filled == {"old.lead": "lead", "old.system": ""}
