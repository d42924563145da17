"""Signals consensus sends (active_learning listens; consensus knows nothing of it)."""

from django.dispatch import Signal

#: Sent inside the transaction that created a scan's ground truth. Arguments: ``truth``.
ground_truth_created = Signal()

#: Sent while an export is built, to ask for the model cards it carries. Arguments: ``project``,
#: ``revision_ids`` (the raters' revisions fused into the exported labels). A receiver returns a
#: list of ``{"model_version", "version", "current", "prelabel_scans", "card", "markdown"}``
#: dicts (``card``: the JSON card, ``markdown``: the same rendered; ``prelabel_scans``: the
#: scans where a rater started from that version's pre-label). Active learning answers
#: (:func:`active_learning.selectors.export_model_cards`).
model_cards_requested = Signal()
