"""Audit events keep who did it and can never change; a project's description has a limit.

- ``actor_username``: the actor's username, copied onto every event (existing rows are
  filled from their user), so deleting the account leaves the event as written.
- ``actor`` and ``project`` lose their foreign-key constraint and get ``DO_NOTHING``: deleting
  a user or a project no longer rewrites their events (``SET_NULL`` was an UPDATE).
- Triggers refuse every UPDATE and DELETE of an audit event (labeling/audit_triggers.py);
  they are created last, after the rows are filled.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from labeling import audit_triggers


def fill_actor_usernames(apps, schema_editor):
    AuditEvent = apps.get_model("labeling", "AuditEvent")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    actors = User.objects.filter(pk__in=AuditEvent.objects.values("actor_id"))
    for user_id, username in actors.values_list("pk", "username"):
        AuditEvent.objects.filter(actor_id=user_id).update(actor_username=username)


def install_triggers(apps, schema_editor):
    audit_triggers.install(schema_editor.connection)


def remove_triggers(apps, schema_editor):
    audit_triggers.remove(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0003_flag_rules"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="project",
            name="description",
            field=models.TextField(blank=True, max_length=5000),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="actor_username",
            field=models.CharField(
                blank=True,
                default="",
                help_text="the actor's username when it happened; empty: the system",
                max_length=150,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(fill_actor_usernames, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="auditevent",
            name="actor",
            field=models.ForeignKey(
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="project",
            field=models.ForeignKey(
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="audit_events",
                to="labeling.project",
            ),
        ),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
