"""Consensus runs: which revisions were fused, how, with what result and what rater performance."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from labeling.models import AnnotationRevision, ImmutableModel, Scan
from mriannot.jobs import Job


class Method(models.TextChoices):
    STAPLE = "staple", "Multi-label STAPLE"
    MAJORITY_VOTE = "majority_vote", "Majority vote"


def run_file_path(scan_id: int, run_id: int, name: str) -> str:
    return f"consensus/{scan_id}/{run_id}/{name}"


class ConsensusRun(Job):
    """One fusion of a scan's submitted revisions. Same inputs and options: the same run."""

    task_name = "consensus.tasks.consensus_run_execute_task"
    lease_s = 2400.0  # the task's 30 min limit and a margin

    scan = models.ForeignKey(Scan, on_delete=models.PROTECT, related_name="consensus_runs")
    method = models.CharField(max_length=32, choices=Method.choices)
    options = models.JSONField(default=dict, help_text="every option the kernel ran with, defaults included")
    kernel_report = models.JSONField(default=dict, help_text="what the kernel reports about its run (e.g. ties)")
    revision_ids = models.JSONField(help_text="input revisions, in rater order")
    input_key = models.CharField(max_length=64, help_text="sha256 of method, options and revision ids")
    code_version = models.CharField(max_length=64, blank=True)
    timings = models.JSONField(default=dict, help_text="seconds per step")
    labels_file = models.FileField(max_length=255, blank=True)
    posterior_file = models.FileField(max_length=255, blank=True)
    label_values = models.JSONField(default=list, help_text="label value of each posterior channel")
    iterations = models.PositiveIntegerField(null=True, blank=True)
    converged = models.BooleanField(null=True)
    ambiguity = models.FloatField(null=True, blank=True)
    ambiguity_details = models.JSONField(default=dict)
    flagged = models.BooleanField(default=False)
    flag_reasons = models.JSONField(
        default=list, help_text="why the run needs a lead: [{code, message, value, threshold, label?, rater?}]"
    )
    agreement = models.JSONField(null=True, blank=True, help_text="inter-rater agreement report")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["scan", "input_key"], name="one_run_per_input")]

    def __str__(self) -> str:
        return f"consensus run {self.pk} of scan {self.scan_id} ({self.method}, {self.status})"


class RaterPerformance(models.Model):
    """A rater's estimated performance in one run (STAPLE's confusion matrix, per-label summaries)."""

    run = models.ForeignKey(ConsensusRun, on_delete=models.CASCADE, related_name="performances")
    rater_index = models.PositiveSmallIntegerField()
    revision = models.ForeignKey(AnnotationRevision, on_delete=models.PROTECT, related_name="+")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    sensitivity = models.JSONField(help_text="label value -> P(rater says l | truth l)")
    specificity = models.JSONField(help_text="label value -> P(rater says not l | truth not l)")
    dice = models.JSONField(help_text="label value -> Dice of the rater's labels against the consensus")
    confusion = models.JSONField(null=True, help_text="[rater label][true label] probabilities (STAPLE)")

    class Meta:
        ordering = ["run", "rater_index"]
        constraints = [models.UniqueConstraint(fields=["run", "rater_index"], name="one_performance_per_rater")]

    def __str__(self) -> str:
        return f"rater {self.rater_index} of consensus run {self.run_id}"


class GroundTruthSource(models.TextChoices):
    CONSENSUS = "consensus", "Consensus accepted automatically (not ambiguous)"
    ACCEPTED = "accepted", "Consensus accepted by a lead"
    EDITED = "edited", "Edited by a lead"


def ground_truth_path(scan_id: int, uid) -> str:
    return f"groundtruth/{scan_id}/{uid}.nii.gz"


class GroundTruth(ImmutableModel):
    """A scan's ground truth: immutable; a newer one supersedes it, nothing overwrites it."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    scan = models.ForeignKey(Scan, on_delete=models.PROTECT, related_name="ground_truths")
    run = models.ForeignKey(ConsensusRun, null=True, blank=True, on_delete=models.PROTECT, related_name="ground_truths")
    source = models.CharField(max_length=16, choices=GroundTruthSource.choices)
    supersedes = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    file = models.FileField(max_length=255)
    sha256 = models.CharField(max_length=64)
    label_counts = models.JSONField(default=dict)
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["scan", "-id"]

    def __str__(self) -> str:
        return f"ground truth {self.pk} of scan {self.scan_id} ({self.source})"


class ExportFormat(models.TextChoices):
    NNUNET = "nnunet", "nnU-Net v2 raw"
    MONAI = "monai", "MONAI datalist"
    BIDS = "bids", "BIDS derivatives"
    DICOMSEG = "dicomseg", "DICOM-SEG with the de-identified source images"


class Export(Job):
    """A dataset export of a project's ground truths, built by a Celery task into one zip."""

    task_name = "consensus.tasks.export_execute_task"
    lease_s = 4200.0  # the task's 1 h limit and a margin

    project = models.ForeignKey("labeling.Project", on_delete=models.PROTECT, related_name="exports")
    format = models.CharField(max_length=16, choices=ExportFormat.choices)
    options = models.JSONField(default=dict)
    file = models.FileField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    summary = models.JSONField(default=dict, help_text="counts per split, checks passed, code version")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.format} export {self.pk} of project {self.project_id} ({self.status})"


# --- Agreement aggregates ----------------------------------------------------------------------
#
# The agreement dashboard reads these rows, not the runs' JSON: they are written in the
# transaction that marks a run done (consensus.services.runs.agreement_rows_write), one set per
# finished run, and ``current`` marks the set of the newest finished run of each scan (the one the
# dashboard counts). Names (usernames, label names) and scan metadata are joined when read, so a
# rename or a metadata edit needs no rewrite.


class AgreementRun(models.Model):
    """A finished run's scan-level agreement figures: a row of the dashboard's scans table."""

    run = models.OneToOneField(ConsensusRun, on_delete=models.CASCADE, related_name="agreement_row")
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+")
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="+")
    current = models.BooleanField(default=False, help_text="the newest finished run of the scan")
    finished_on = models.DateField()
    mean_pairwise_dice = models.FloatField(null=True)
    fleiss_kappa = models.FloatField(null=True)
    krippendorff_alpha = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["project", "current", "mean_pairwise_dice"], name="agreement_run_order")]

    def __str__(self) -> str:
        return f"agreement of consensus run {self.run_id}"


class _AgreementRow(models.Model):
    """What every per-label agreement row holds: its run, project and scan, and whether that run
    is the scan's newest finished one."""

    run = models.ForeignKey(ConsensusRun, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+")
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="+")
    current = models.BooleanField(default=False)

    class Meta:
        abstract = True


class AgreementLabel(_AgreementRow):
    """A finished run's multi-rater figures for one label (Fleiss' kappa, Krippendorff's alpha)."""

    label = models.IntegerField()
    fleiss_kappa = models.FloatField(null=True)
    krippendorff_alpha = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["project", "current", "label"], name="agreement_label_current")]

    def __str__(self) -> str:
        return f"label {self.label} agreement of consensus run {self.run_id}"


class AgreementPair(_AgreementRow):
    """Two raters' agreement on one label of a scan, in one finished run."""

    finished_on = models.DateField()
    label = models.IntegerField()
    rater_a = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    rater_b = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    dice = models.FloatField(null=True)
    jaccard = models.FloatField(null=True)
    hausdorff95 = models.FloatField(null=True)
    assd = models.FloatField(null=True)
    surface_dice = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["project", "current", "label"], name="agreement_pair_current")]

    def __str__(self) -> str:
        return f"label {self.label} pair of consensus run {self.run_id}"


class AgreementRaterScore(_AgreementRow):
    """A rater's figures against the consensus for one label, in one finished run."""

    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    label = models.IntegerField()
    dice = models.FloatField(null=True)
    sensitivity = models.FloatField(null=True)
    specificity = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["project", "current", "annotator"], name="agreement_rater_current")]

    def __str__(self) -> str:
        return f"rater {self.annotator_id} label {self.label} of consensus run {self.run_id}"
