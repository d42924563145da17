"""Indexes for the paged calls of large projects (issue 17): scans by project and stage,
assignments by scan and status."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0011_dicom_imports"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="assignment",
            index=models.Index(fields=["scan", "status"], name="assignment_scan_status"),
        ),
        migrations.AddIndex(
            model_name="scan",
            index=models.Index(fields=["project", "status"], name="scan_project_status"),
        ),
    ]
