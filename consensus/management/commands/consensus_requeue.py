from django.core.management.base import BaseCommand

from consensus.services import consensus_runs_requeue_stale


class Command(BaseCommand):
    help = "Queue again consensus runs left queued or running (for example after a private Redis was restarted)."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, default=3600.0, help="seconds since the run was created")

    def handle(self, *args, older_than: float, **options):
        ids = consensus_runs_requeue_stale(older_than_s=older_than)
        if ids:
            self.stdout.write(f"Queued again {len(ids)} consensus run(s): {ids}")
