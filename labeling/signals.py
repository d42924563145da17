"""Signals other apps listen to. labeling knows nothing of them (dependencies point inwards)."""

from django.dispatch import Signal

#: Sent inside the transaction that brings a scan to its project's raters_per_scan submitted
#: raters. Arguments: ``scan`` (Scan), ``actor`` (the user who submitted last).
#: Receivers that queue work must do so on commit (``mriannot.queue.enqueue_on_commit``).
scan_fully_submitted = Signal()

#: Sent inside the transaction that added scans to a project. Arguments: ``project``, ``scans``.
scans_added = Signal()

#: Sent inside the transaction that submitted an assignment. Arguments: ``assignment``, ``revision``.
assignment_submitted = Signal()

#: Sent to ask which model versions used scans, so that their split is frozen. Arguments:
#: ``project``, ``scan_ids``. A receiver returns a list of ``{"scan", "model_version",
#: "version", "used_as"}`` dicts (``used_as``: "train" or "validation"); labeling reads the
#: answers (:func:`labeling.selectors.scan_split_usage`) without knowing who gives them.
split_usage_requested = Signal()
