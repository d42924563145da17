"""Signals consensus sends (active_learning listens; consensus knows nothing of it)."""

from django.dispatch import Signal

#: Sent inside the transaction that created a scan's ground truth. Arguments: ``truth``.
ground_truth_created = Signal()
