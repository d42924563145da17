"""Active learning listens to labeling and consensus (they know nothing of it).

A failure here is logged and never breaks the save, submission or consensus that sent
the signal: ranking and retraining can always be asked for again from the API.
"""

import logging

from django.dispatch import receiver

from consensus.signals import ground_truth_created, model_cards_requested
from labeling.signals import assignment_submitted, scans_added, split_usage_requested

from .selectors import export_model_cards, split_usage
from .services import editing_effort_record, retrain_if_due, scores_update_request

log = logging.getLogger(__name__)


@receiver(ground_truth_created, dispatch_uid="active_learning.retrain_if_due")
def on_ground_truth(sender, truth, **kwargs) -> None:
    try:
        retrain_if_due(project=truth.scan.project)
    except Exception:
        log.exception("could not queue retraining for project %s", truth.scan.project_id)


@receiver(scans_added, dispatch_uid="active_learning.rank_new_scans")
def on_scans_added(sender, project, scans, **kwargs) -> None:
    try:
        scores_update_request(project=project)
    except Exception:
        log.exception("could not queue ranking for project %s", project.pk)


@receiver(assignment_submitted, dispatch_uid="active_learning.editing_effort")
def on_submit(sender, assignment, revision, **kwargs) -> None:
    try:
        editing_effort_record(assignment=assignment, revision=revision)
    except Exception:
        log.exception("could not record the editing effort of assignment %s", assignment.pk)


@receiver(split_usage_requested, dispatch_uid="active_learning.split_usage")
def on_split_usage(sender, project, scan_ids, **kwargs) -> list[dict]:
    """The model versions that used these scans: changing their split invalidates them.

    Not wrapped like the others: a split change must not go ahead on a failed answer.
    """
    return split_usage(project=project, scan_ids=scan_ids)


@receiver(model_cards_requested, dispatch_uid="active_learning.model_cards")
def on_model_cards_requested(sender, project, revision_ids, **kwargs) -> list[dict]:
    """The model cards an export carries. Not wrapped: an export must not go out without them."""
    return export_model_cards(project=project, revision_ids=revision_ids)
