import shutil

from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError

from consensus.models import ExportFormat
from consensus.services import export_execute, export_request
from labeling.models import Project


class Command(BaseCommand):
    help = "Export a project's ground truths (nnU-Net, MONAI datalist or BIDS derivatives) as a checked zip."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project id or name")
        parser.add_argument("--format", choices=ExportFormat.values, default=ExportFormat.NNUNET)
        parser.add_argument("--include-raters", action="store_true")
        parser.add_argument("--include-posterior", action="store_true")
        parser.add_argument("--only-adjudicated", action="store_true")
        parser.add_argument("--dataset-id", type=int, default=500)
        parser.add_argument("--output", help="copy the zip here", required=True)

    def handle(
        self, *args, project, format, include_raters, include_posterior, only_adjudicated, dataset_id, output, **kw
    ):
        found = Project.objects.filter(pk=int(project)) if project.isdigit() else Project.objects.filter(name=project)
        if not found.exists():
            raise CommandError(f"No project {project!r}.")
        export = export_request(
            project=found.get(),
            actor=None,
            format=format,
            include_raters=include_raters,
            include_posterior=include_posterior,
            only_adjudicated=only_adjudicated,
            dataset_id=dataset_id,
            queue=False,
        )
        export = export_execute(export_id=export.pk)  # here, not in a worker: the command waits anyway
        with default_storage.open(export.file.name, "rb") as src, open(output, "wb") as dst:
            shutil.copyfileobj(src, dst)
        self.stdout.write(
            self.style.SUCCESS(f"Export {export.pk}: {export.message}, checked, sha256 {export.sha256} -> {output}")
        )
