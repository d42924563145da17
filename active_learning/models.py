"""Model versions trained on ground truth, per-scan uncertainty scores, pre-labels, editing effort."""

from __future__ import annotations

from django.db import models

from labeling.models import Assignment, Project, Scan
from mriannot.jobs import Job


class ModelVersion(Job):
    """One training of the project's segmentation network, pinned to the ground truths it saw."""

    task_name = "active_learning.tasks.model_version_train_task"
    lease_s = 3 * 3600.0 + 600.0  # the task's 3 h limit and a margin

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="model_versions")
    version = models.PositiveIntegerField()
    trigger = models.CharField(max_length=16, default="manual", help_text="'auto' (every N ground truths) or 'manual'")
    ground_truth_ids = models.JSONField(default=list, help_text="training ground truths the model saw")
    validation_ground_truth_ids = models.JSONField(default=list, help_text="frozen validation split")
    hyperparameters = models.JSONField(default=dict)
    validation_dice = models.JSONField(default=dict, help_text="label value -> mean Dice on the validation split")
    validation_dice_per_scan = models.JSONField(
        default=dict, help_text="scan id -> (label value -> Dice) on each validation scan (breakdowns by metadata)"
    )
    weights = models.FileField(max_length=255, blank=True)
    code_version = models.CharField(max_length=64, blank=True)
    scored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "-version"]
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="model_version_unique")]

    def __str__(self) -> str:
        return f"{self.project} model v{self.version} ({self.status})"

    @property
    def channel_roles(self) -> list[str]:
        """The sequences the network reads, in order (``hyperparameters.network.input_roles``).

        Empty: the scan's own image alone (a project that declares no channels, or a version
        trained before channels were recorded).
        """
        return list((self.hyperparameters or {}).get("network", {}).get("input_roles", []))


class ScanScore(models.Model):
    """A scan's uncertainty under one model version (or its cold-start rank when there is none)."""

    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="al_scores")
    model_version = models.ForeignKey(ModelVersion, null=True, on_delete=models.CASCADE, related_name="scores")
    strategy = models.CharField(max_length=32)
    score = models.FloatField(help_text="higher = label first")
    entropy = models.FloatField(null=True)
    bald = models.FloatField(null=True)
    disagreement = models.FloatField(null=True, help_text="1 - mean pairwise Dice of raters who submitted")
    whole_volume = models.BooleanField(default=False, help_text="nothing predicted: scored over the whole volume")
    prelabel = models.FileField(max_length=255, blank=True)
    features = models.JSONField(null=True, blank=True, help_text="cold-start image features (no model)")
    expected_volume_ml = models.JSONField(
        null=True, blank=True, help_text="label value -> the model's expected volume (sum of its mean softmax), mL"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-score"]
        constraints = [
            models.UniqueConstraint(fields=["scan", "model_version"], name="one_score_per_scan_and_model"),
        ]

    def __str__(self) -> str:
        return f"score {self.score:.4g} of scan {self.scan_id} under model {self.model_version_id}"


class EditingEffort(models.Model):
    """How much an annotator changed a pre-label: Dice between the pre-label and what they submitted."""

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="editing_effort")
    model_version = models.ForeignKey(ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+")
    dice = models.JSONField(help_text="label value -> Dice(pre-label, submitted)")
    mean_dice = models.FloatField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"editing effort of assignment {self.assignment_id}"
