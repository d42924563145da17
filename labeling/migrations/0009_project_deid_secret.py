"""A de-identification key per project; existing projects each get their own (not one shared default)."""

import secrets

from django.db import migrations, models

import labeling.models


def one_key_each(apps, schema_editor):
    Project = apps.get_model("labeling", "Project")
    for project in Project.objects.only("pk"):
        Project.objects.filter(pk=project.pk).update(deid_secret=secrets.token_hex(32))


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0008_scan_metadata"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="deid_secret",
            field=models.CharField(
                default=labeling.models.deid_secret_new,
                editable=False,
                help_text="Key of the DICOM import's pseudonyms (HMAC-SHA256); never shown by the API.",
                max_length=64,
            ),
        ),
        migrations.RunPython(one_key_each, migrations.RunPython.noop),
    ]
