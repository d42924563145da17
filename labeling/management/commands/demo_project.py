from django.core.management.base import BaseCommand

from labeling.demo import DEMO_PASSWORD, RATERS, demo_project_create
from labeling.models import Project


class Command(BaseCommand):
    help = "Create the demo project: a cohort SIMULATED from the MNI152 template, with simulated raters."

    def add_arguments(self, parser):
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when any project exists.")
        parser.add_argument("--scans", type=int, default=10)
        parser.add_argument("--rated", type=int, default=4, help="Scans labelled and submitted by every rater.")
        parser.add_argument("--resolution", type=int, choices=[1, 2], default=2, help="mm")
        parser.add_argument("--seed", type=int, default=2026)

    def handle(self, *args, if_empty: bool, scans: int, rated: int, resolution: int, seed: int, **options):
        if if_empty and Project.objects.exists():
            self.stdout.write("Projects exist already; the demo project is not created again.")
            return
        self.stdout.write(f"Building the demo project ({scans} simulated scans at {resolution} mm) ...")
        summary = demo_project_create(n_scans=scans, n_rated=min(rated, scans), resolution=resolution, seed=seed)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo project {summary.project.name!r}: {summary.scans} scans, "
                f"{summary.fully_rated} rated by all raters.\n"
                f"Logins (password {DEMO_PASSWORD!r}): admin (site admin), lead, {', '.join(RATERS)}."
            )
        )
