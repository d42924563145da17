from django.core.management.base import BaseCommand

from mriannot.jobs import job_kinds, jobs_requeue_stale


class Command(BaseCommand):
    help = (
        "Send again every background job (consensus run, export, model version) left queued by a lost "
        "message or running on a worker that died. Run by the launcher at start; safe to schedule."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--queued-for",
            type=float,
            default=None,
            metavar="SECONDS",
            help="send queued jobs older than this (default: each kind's lease; 0 after the broker was emptied)",
        )

    def handle(self, *args, queued_for: float | None, **options):
        sent = jobs_requeue_stale(queued_for_s=queued_for)
        for kind, ids in sent.items():
            self.stdout.write(f"Queued again {len(ids)} {kind} job(s): {ids}")
        if not sent:
            kinds = ", ".join(model._meta.label for model in job_kinds())
            self.stdout.write(f"No stale job ({kinds}).")
