"""Queue a consensus run when a scan's last rater submits (labeling sends, consensus listens)."""

from django.dispatch import receiver

from labeling.signals import scan_fully_submitted

from .services import consensus_run_request


@receiver(scan_fully_submitted, dispatch_uid="consensus.queue_on_full_submission")
def queue_consensus(sender, scan, actor, **kwargs) -> None:
    consensus_run_request(scan=scan, actor=actor)
