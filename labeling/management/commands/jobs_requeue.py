from django.core.management.base import BaseCommand

from mriannot.jobs import BrokerUnreachable, job_kinds, jobs_requeue_stale


class Command(BaseCommand):
    help = (
        "Send again every background job (consensus run, export, model version) that lost its worker "
        "(no heartbeat within its lease) or whose message never reached the broker or was lost, and the "
        "scoring of scans left without a score. Every worker runs this check every "
        "MRIANNOT_JOBS_REQUEUE_EVERY_S; the launcher runs it at start."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--queued-for",
            type=float,
            default=None,
            metavar="SECONDS",
            help="also send queued jobs sent longer ago than this (default: each kind's lease; 0 after the "
            "broker was emptied)",
        )

    def handle(self, *args, queued_for: float | None, **options):
        try:
            sent = jobs_requeue_stale(queued_for_s=queued_for)
        except BrokerUnreachable as exc:
            sent = exc.sent
            self.stderr.write(f"Not everything was sent: {exc}.")
        for kind, ids in sent.items():
            self.stdout.write(f"Queued again {len(ids)} {kind} job(s): {ids}")
        if not sent:
            kinds = ", ".join(model._meta.label for model in job_kinds())
            self.stdout.write(f"No stale job ({kinds}).")
