"""``manage.py import_dicom PATH --project N``: a DICOM study (a folder or a .zip) into a project.

The import is the same job as an upload on the Scans page (``labeling/dicom_imports.py``), run
in this process: the study is analysed (each series checked, de-identified and converted) and
its scans created with the guessed roles. With ``--review`` it stops after the analysis and
waits for a lead (the Scans page, or ``--confirm ID [--role SERIES=ROLE ...]`` here).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from labeling import dicom_imports
from labeling.models import DicomImport, Project
from mriannot.errors import ServiceError
from mriannot.refusals import InputRefused


class Command(BaseCommand):
    help = (
        "Import a DICOM study (a folder, searched recursively, or a .zip) into a project: each usable "
        "MR series is de-identified and converted, then becomes a scan (or a further sequence of one, "
        "when the project declares several) (docs/dicom.md). Prints one line per series."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", help="a folder of DICOM files or a .zip of them")
        parser.add_argument("--project", type=int, help="the project's id")
        parser.add_argument("--user", default="", help="the username the audit trail names (default: the system)")
        parser.add_argument("--split", default="unassigned", help="the split of the new scans")
        parser.add_argument(
            "--review",
            action="store_true",
            help="stop after the analysis: a lead checks the roles and confirms (the Scans page, or --confirm)",
        )
        parser.add_argument("--confirm", type=int, metavar="ID", help="confirm import ID and create its scans")
        parser.add_argument(
            "--role",
            action="append",
            default=[],
            metavar="SERIES=ROLE",
            help="with --confirm: the role of a series (its number in the import), e.g. --role 3=FLAIR",
        )

    def handle(self, *args, path: str | None, project: int | None, user: str, split: str, review: bool, **options):
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user).first()
            if actor is None:
                raise CommandError(f"No user {user!r}.")
        try:
            if options["confirm"] is not None:
                job = self._confirm(options["confirm"], actor=actor, roles=options["role"])
            else:
                job = self._import(path, project=project, actor=actor, split=split, review=review)
        except (ServiceError, InputRefused) as error:
            raise CommandError(f"{error.code}: {error.message}") from None
        self._report(job)

    def _import(self, path, *, project, actor, split, review) -> DicomImport:
        if path is None or project is None:
            raise CommandError("Give a PATH and --project N (or --confirm ID).")
        target = Project.objects.filter(pk=project).first()
        if target is None:
            raise CommandError(f"No project {project}.")
        source = Path(path)
        with tempfile.TemporaryFile() as spooled:
            if source.is_dir():
                with zipfile.ZipFile(spooled, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                    for n, file in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
                        archive.write(file, arcname=f"{n:06d}")  # neutral names: a path may name the patient
                spooled.seek(0)
                upload = spooled
            elif source.is_file():
                upload = source
            else:
                raise CommandError(f"{path} is neither a folder nor a file.")
            return dicom_imports.dicom_study_import(
                project=target, actor=actor, archive=upload, split=split, review=review
            )

    def _confirm(self, pk: int, *, actor, roles: list[str]) -> DicomImport:
        job = DicomImport.objects.filter(pk=pk).first()
        if job is None:
            raise CommandError(f"No DICOM import {pk}.")
        chosen = {}
        for item in roles:
            index, _, role = item.partition("=")
            if not index.strip().isdigit() or not role:
                raise CommandError(f"--role {item!r}: give SERIES=ROLE, for example 3=FLAIR.")
            chosen[int(index)] = role.strip()
        job = dicom_imports.dicom_import_confirm(job=job, actor=actor, roles=chosen, queue=False)
        return dicom_imports.dicom_import_execute(import_id=job.pk)

    def _report(self, job: DicomImport) -> None:
        report = dicom_imports.dicom_import_report(job)
        for result in report["results"]:
            number, slices, role = result.get("series_number"), result.get("slices"), result.get("role")
            line = f"series {result['series']} (#{number}, {slices} slices, {role}): "
            if result["status"] == "stored":
                line += result.get("detail") or f"stored as scan {result['scan']}"
            elif result["status"] == "ready":
                line += f"ready: {result.get('plan_detail', '')}"
            else:
                line += f"{result['status']}: {result.get('detail', '')}"
            self.stdout.write(line)
        if report["state"] == "review":
            self.stdout.write(
                f"Import {job.pk} waits for review: {report['ready']} series ready, {report['refused']} refused, "
                f"{report['ignored_files']} file(s) not DICOM images. Confirm it on the Scans page or with "
                f"--confirm {job.pk} [--role SERIES=ROLE ...]."
            )
            return
        left = report["superseded"] + report["not_declared"] + report["no_reference"]
        self.stdout.write(
            f"{report['stored']} stored, {report['duplicate']} duplicate, {report['refused']} refused, "
            f"{left} left out, {report['ignored_files']} file(s) not DICOM images."
        )
