"""Queue a consensus run when a scan's last rater submits (labeling sends, consensus listens)."""

from django.dispatch import receiver

from labeling.signals import scan_fully_submitted
from mriannot.jobs import JobStatus

from .services import consensus_outcome_apply, consensus_run_request


@receiver(scan_fully_submitted, dispatch_uid="consensus.queue_on_full_submission")
def queue_consensus(sender, scan, actor, **kwargs) -> None:
    run, queued = consensus_run_request(scan=scan, actor=actor)
    if not queued and run.status == JobStatus.DONE:
        # The same submissions as a finished run (resubmitted unchanged after a rework): it decides.
        consensus_outcome_apply(run=run)
