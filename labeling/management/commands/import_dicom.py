"""``manage.py import_dicom PATH --project N``: a DICOM study (a folder or a .zip) into a project."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from labeling.services import dicom_study_import
from mriannot.errors import ServiceError
from mriannot.refusals import InputRefused


class Command(BaseCommand):
    help = (
        "Import a DICOM study (a folder, searched recursively, or a .zip) into a project: each usable "
        "MR series becomes a de-identified scan (docs/dicom.md). Prints one line per series."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="a folder of DICOM files or a .zip of them")
        parser.add_argument("--project", type=int, required=True, help="the project's id")
        parser.add_argument("--user", default="", help="the username the audit trail names (default: the system)")

    def handle(self, *args, path: str, project: int, user: str, **options):
        target = Project.objects.filter(pk=project).first()
        if target is None:
            raise CommandError(f"No project {project}.")
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user).first()
            if actor is None:
                raise CommandError(f"No user {user!r}.")
        source = Path(path)
        with tempfile.TemporaryFile() as spooled:
            if source.is_dir():
                with zipfile.ZipFile(spooled, "w", zipfile.ZIP_DEFLATED) as archive:
                    for n, file in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
                        archive.write(file, arcname=f"{n:06d}")  # neutral names: a path may name the patient
            elif source.is_file():
                spooled.write(source.read_bytes())
            else:
                raise CommandError(f"{path} is neither a folder nor a file.")
            spooled.seek(0)
            try:
                report = dicom_study_import(project=target, actor=actor, archive=spooled)
            except (ServiceError, InputRefused) as error:
                raise CommandError(f"{error.code}: {error.message}") from None
        for result in report["results"]:
            number, slices, role = result["series_number"], result["slices"], result["role"]
            line = f"series {result['series']} (#{number}, {slices} slices, {role}): "
            if result["status"] == "stored":
                line += f"stored as scan {result['scan']}"
            else:
                line += f"{result['status']}: {result.get('detail', '')}"
            self.stdout.write(line)
        self.stdout.write(
            f"{report['stored']} stored, {report['duplicate']} duplicate, {report['refused']} refused, "
            f"{report['ignored_files']} file(s) not DICOM images."
        )
