"""Consensus services: runs (``runs``), ground truth (``ground_truth``), dataset export
(``exports``). Views, receivers, tasks and other apps import them from here."""

from .exports import export_execute, export_request
from .ground_truth import current_ground_truth, final_ground_truth, ground_truth_accept, ground_truth_edit
from .runs import (
    consensus_outcome_apply,
    consensus_run_execute,
    consensus_run_request,
    flag_rules,
    resolve_options,
    run_flag_reasons,
    submitted_revisions,
    write_file,
)

__all__ = [
    "consensus_outcome_apply",
    "consensus_run_execute",
    "consensus_run_request",
    "current_ground_truth",
    "export_execute",
    "export_request",
    "final_ground_truth",
    "flag_rules",
    "ground_truth_accept",
    "ground_truth_edit",
    "resolve_options",
    "run_flag_reasons",
    "submitted_revisions",
    "write_file",
]
