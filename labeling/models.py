"""Projects, label schemas, members, scans, assignments, immutable revisions and the audit trail."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from mriannot.jobs import Job


class ImmutableModel(models.Model):
    """A row that is written once: updates and deletes are refused (history is append-only)."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise RuntimeError(f"{type(self).__name__} rows are immutable; create a new one instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} rows are immutable and are never deleted.")


class Role(models.TextChoices):
    ANNOTATOR = "annotator", "Annotator"
    LEAD = "lead", "Lead"
    ADMIN = "admin", "Admin"


class ALStrategy(models.TextChoices):
    RANDOM = "random", "Random"
    ENTROPY = "entropy", "MC-dropout entropy"
    BALD = "bald", "BALD"
    ENTROPY_DISAGREEMENT = "entropy_disagreement", "Entropy weighed with rater disagreement"
    ENTROPY_STRATIFIED = "entropy_stratified", "Entropy spread over the rarest label's expected volume"


class PrelabelPolicy(models.TextChoices):
    """What the viewer does with the model's pre-label of a scan (active learning).

    ``offered``: the rater chooses to start blank or from the model; ``applied``: the viewer
    starts from the pre-label; ``off``: no pre-label is shown. With several raters per scan,
    applying one model's drawing to all of them would tie their errors together (consensus
    assumes independent raters), so a new project defaults to ``offered`` then, and to
    ``applied`` with a single rater (:func:`labeling.services.default_prelabel_policy`).
    """

    OFF = "off", "Off: no pre-label is shown"
    OFFERED = "offered", "Offered: the rater chooses blank or the model"
    APPLIED = "applied", "Applied: the viewer starts from the model"


def deid_secret_new() -> str:
    """A project's de-identification key: 32 random bytes, hex (pseudonyms, UIDs, date shifts)."""
    return secrets.token_hex(32)


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, max_length=5000)  # mriannot.fields.TEXT_MAX_CHARS (the API's limit)
    raters_per_scan = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    ambiguity_threshold = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Scans whose consensus ambiguity exceeds this are flagged for adjudication.",
    )
    flag_min_label_dice = models.FloatField(
        null=True,
        blank=True,
        default=0.5,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Flag a scan when a label's mean pairwise Dice between raters is below this (empty: off).",
    )
    flag_max_volume_spread = models.FloatField(
        null=True,
        blank=True,
        default=0.5,
        validators=[MinValueValidator(0.0)],
        help_text="Flag a scan when a label's rater volumes differ by more than this fraction of their mean "
        "(empty: off).",
    )
    flag_max_rater_gap = models.FloatField(
        null=True,
        blank=True,
        default=0.25,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Flag a scan when a rater's mean Dice against the consensus is this far below the median "
        "rater's (empty: off).",
    )
    al_strategy = models.CharField(max_length=32, choices=ALStrategy.choices, default=ALStrategy.ENTROPY)
    al_retrain_every = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Retrain the active-learning model after this many new training ground truths.",
    )
    prelabel_policy = models.CharField(
        max_length=16,
        choices=PrelabelPolicy.choices,
        default=PrelabelPolicy.OFFERED,
        help_text="What the viewer does with the model's pre-label: off, offered (the rater chooses) or applied.",
    )
    priority_note = models.CharField(
        max_length=200, blank=True, help_text="How the worklists are ordered now (set by active learning)."
    )
    channels = models.JSONField(
        default=list,
        blank=True,
        help_text='The sequences every scan holds, in order (for example ["T1w", "FLAIR"]); the first is the '
        "scan's own image and grid. Empty: one image per scan.",
    )
    is_simulated = models.BooleanField(
        default=False, help_text="The scans are simulated (for example the demo cohort from MNI152)."
    )
    deid_secret = models.CharField(
        max_length=64,
        default=deid_secret_new,
        editable=False,
        help_text="Key of the DICOM import's pseudonyms (HMAC-SHA256); never shown by the API.",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class LabelClass(models.Model):
    """One entry of a project's label schema. Value 0 is background and is never listed."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_classes")
    value = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(255)])
    name = models.CharField(max_length=100)
    color = models.CharField(
        max_length=7, validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$", "Use a colour like #ff8800.")]
    )
    key = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(9)],
        help_text="The number key (1-9) that picks this label in the viewer; empty: none.",
    )

    class Meta:
        ordering = ["project", "value"]
        constraints = [
            models.UniqueConstraint(fields=["project", "value"], name="label_value_unique_in_project"),
            models.UniqueConstraint(fields=["project", "name"], name="label_name_unique_in_project"),
            models.UniqueConstraint(fields=["project", "key"], name="label_key_unique_in_project"),
        ]

    def __str__(self) -> str:
        return f"{self.value}: {self.name}"


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "user"]
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user_id} is {self.role} of project {self.project_id}"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VALIDATION = "validation", "Validation"
    TEST = "test", "Test"
    UNASSIGNED = "unassigned", "Unassigned"


class ScanStatus(models.TextChoices):
    NEW = "new", "New"
    IN_PROGRESS = "in_progress", "Being labelled"
    SUBMITTED = "submitted", "All raters submitted"
    CONSENSUS = "consensus", "Consensus ready"
    FLAGGED = "flagged", "Flagged for adjudication"
    GROUND_TRUTH = "ground_truth", "Ground truth"


class Scan(models.Model):
    """A NIfTI image, reoriented to RAS+ and stored once by content hash."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="scans")
    sha256 = models.CharField(max_length=64, help_text="sha256 of the bytes as uploaded")
    image = models.FileField(max_length=255)
    original_filename = models.CharField(max_length=255, blank=True)
    shape = models.JSONField(help_text="[X, Y, Z] voxels, canonical (RAS+) order")
    spacing = models.JSONField(help_text="[x, y, z] voxel size in mm")
    affine = models.JSONField(help_text="4x4 voxel-to-world (RAS+) matrix of the stored image")
    orientation = models.CharField(max_length=3, help_text="axis codes of the file as uploaded, e.g. LPS")
    subject_id = models.CharField(max_length=64, blank=True)
    session_id = models.CharField(max_length=64, blank=True)
    split = models.CharField(max_length=16, choices=Split.choices, default=Split.UNASSIGNED)
    status = models.CharField(max_length=16, choices=ScanStatus.choices, default=ScanStatus.NEW)
    # Acquisition and subject metadata: only these columns, validated by labeling/metadata.py
    # (identifiers pattern-checked, the rest controlled vocabularies); empty: not recorded.
    site = models.CharField(max_length=64, blank=True, help_text="short identifier of the site")
    scanner = models.CharField(max_length=64, blank=True, help_text="short identifier of the scanner model")
    field_strength = models.FloatField(null=True, blank=True, help_text="tesla")
    sequence = models.CharField(max_length=8, blank=True, help_text="T1w, T2w, FLAIR, PD or other")
    sex = models.CharField(max_length=8, blank=True, help_text="F, M, other or unknown")
    age_band = models.CharField(max_length=8, blank=True, help_text="18-29, 30-39, ... 80+, 0-17 or unknown")
    dicom_series = models.FileField(
        max_length=255, blank=True, help_text="zip of the de-identified DICOM slices the image was converted from"
    )
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["project", "sha256"], name="scan_once_per_project")]
        # The scans of one stage (the flagged queue, the home page's counts by stage, the scans
        # table filtered by status): an index range, not every scan of the project (issue 17).
        indexes = [models.Index(fields=["project", "status"], name="scan_project_status")]

    def __str__(self) -> str:
        return f"scan {self.pk} ({self.subject_id or self.sha256[:12]})"


class ScanChannel(models.Model):
    """A further sequence of a scan (FLAIR beside T1w), stored on the scan's own grid.

    The scan's image is its first channel; a channel acquired on another grid is resampled onto
    it at upload (trilinear, in world coordinates: the sequences are taken as co-registered, as
    in one DICOM session) and ``transform`` records the map from the scan's voxels to the voxels
    of the channel as uploaded.
    """

    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="channels")
    role = models.CharField(max_length=8, help_text="T1w, T2w, FLAIR, PD or other")
    sha256 = models.CharField(max_length=64, help_text="sha256 of the bytes as uploaded")
    image = models.FileField(max_length=255)
    resampled = models.BooleanField(default=False, help_text="the upload was on another grid and was resampled")
    transform = models.JSONField(
        null=True, blank=True, help_text="4x4 map from the scan's voxel indices to the uploaded channel's (RAS+)"
    )
    source_shape = models.JSONField(help_text="[X, Y, Z] of the channel as uploaded, RAS+")
    source_spacing = models.JSONField(help_text="[x, y, z] mm of the channel as uploaded")
    coverage = models.FloatField(help_text="fraction of the scan's voxels inside the uploaded channel's field of view")
    dicom_series = models.FileField(
        max_length=255, blank=True, help_text="zip of the de-identified DICOM slices the channel was converted from"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["scan", "id"]
        constraints = [models.UniqueConstraint(fields=["scan", "role"], name="one_channel_per_role")]

    def __str__(self) -> str:
        return f"{self.role} of scan {self.scan_id}"


class AssignmentStatus(models.TextChoices):
    TODO = "todo", "To do"
    IN_PROGRESS = "in_progress", "In progress"
    SUBMITTED = "submitted", "Submitted"
    RETURNED = "returned", "Returned for rework"  # a lead sent the submission back, with a comment


class Assignment(models.Model):
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=16, choices=AssignmentStatus.choices, default=AssignmentStatus.TODO)
    priority = models.FloatField(default=0.0, help_text="Worklist order: higher first.")
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-priority", "id"]
        constraints = [models.UniqueConstraint(fields=["scan", "annotator"], name="one_assignment_per_rater")]
        # Counts by status of a project's assignments (home page, People page) read the index
        # alone, not each assignment's row (issue 17).
        indexes = [models.Index(fields=["scan", "status"], name="assignment_scan_status")]

    def __str__(self) -> str:
        return f"assignment {self.pk} of scan {self.scan_id} to user {self.annotator_id} ({self.status})"


class RevisionSource(models.TextChoices):
    MANUAL = "manual", "Drawn in the viewer"
    UPLOAD = "upload", "Uploaded file"
    PRELABEL = "prelabel", "Started from a model pre-label"
    SIMULATED = "simulated", "Simulated rater (demo)"


def revision_path(scan_id: int, uid: uuid.UUID) -> str:
    return f"annotations/{scan_id}/{uid}.nii.gz"


class AnnotationRevision(ImmutableModel):
    """One save of an assignment's label volume. Never updated, never deleted."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    assignment = models.ForeignKey(Assignment, on_delete=models.PROTECT, related_name="revisions")
    number = models.PositiveIntegerField(help_text="1, 2, ... within the assignment")
    base = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    file = models.FileField(max_length=255)
    sha256 = models.CharField(max_length=64, help_text="sha256 of the stored label volume")
    label_counts = models.JSONField(default=dict, help_text="voxels per label value")
    source = models.CharField(max_length=16, choices=RevisionSource.choices, default=RevisionSource.MANUAL)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["assignment", "number"]
        constraints = [
            models.UniqueConstraint(fields=["assignment", "number"], name="revision_number_unique"),
        ]

    def __str__(self) -> str:
        return f"revision {self.number} of assignment {self.assignment_id}"


class CommentKind(models.TextChoices):
    COMMENT = "comment", "Comment"
    RETURN = "return", "Returned for rework"


class Comment(ImmutableModel):
    """One message of a scan's thread. Never edited, never deleted.

    A comment on an assignment is between its rater and the project's leads: the rater sees
    the comments on their own assignments and nothing else (blinding: never another rater's).
    A comment without an assignment is a note among the leads. ``kind`` is ``return`` for the
    comment a lead wrote when sending the submission back for rework. Like the audit trail,
    the author is named by id without a constraint and by ``author_username`` as it was then.
    """

    scan = models.ForeignKey(Scan, on_delete=models.PROTECT, related_name="comments")
    assignment = models.ForeignKey(Assignment, null=True, blank=True, on_delete=models.PROTECT, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    author_username = models.CharField(max_length=150, help_text="the author's username when it was written")
    author_role = models.CharField(
        max_length=16, choices=Role.choices, help_text="the author's role in the project when it was written"
    )
    kind = models.CharField(max_length=16, choices=CommentKind.choices, default=CommentKind.COMMENT)
    text = models.TextField(max_length=5000)  # mriannot.fields.TEXT_MAX_CHARS (the API's limit)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"comment {self.pk} on scan {self.scan_id} by {self.author_username}"

    def save(self, *args, **kwargs):
        if self._state.adding and self.author is not None and not self.author_username:
            self.author_username = self.author.get_username()
        super().save(*args, **kwargs)


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise RuntimeError("Audit events are immutable; record a new event instead.")

    def delete(self):
        raise RuntimeError("Audit events are never deleted.")


class AuditEvent(ImmutableModel):
    """Append-only record of who did what to which object, and when.

    Nothing changes an event once written, at the database level too: triggers refuse every
    UPDATE and DELETE of the table (:mod:`labeling.audit_triggers`). So the event names its
    actor and project by id without a foreign-key constraint (``DO_NOTHING``,
    ``db_constraint=False``, as django-simple-history does for its history rows): deleting a
    user or a project leaves the events as they were, where ``SET_NULL`` would rewrite them.
    ``actor_username`` keeps who it was after the account is gone; read it, not
    ``actor.username`` (``actor`` of a deleted user raises ``DoesNotExist``).
    """

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_username = models.CharField(
        max_length=150, blank=True, help_text="the actor's username when it happened; empty: the system"
    )
    project = models.ForeignKey(
        Project, null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="audit_events"
    )
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} on {self.target_type} {self.target_id}"

    def save(self, *args, **kwargs):
        if self._state.adding and self.actor is not None and not self.actor_username:
            self.actor_username = self.actor.get_username()
        super().save(*args, **kwargs)


class ApiToken(models.Model):
    """A named API token for scripts, sent as ``Authorization: Token <key>``.

    Only the sha256 of the key is stored: the key itself is shown once, when the token is made.
    A token expires (``expires_at``); revoking it deletes the row (the audit trail keeps the event).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8, help_text="The key's first characters, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"token {self.prefix}… of {self.user_id} ({self.name or 'unnamed'})"


class DicomImportPhase(models.TextChoices):
    ANALYSE = "analyse", "Reading, checking, de-identifying and converting the series"
    REVIEW = "review", "Waiting for a lead to check the roles and confirm"
    CREATE = "create", "Creating the scans"
    FINISHED = "finished", "Finished"
    DISCARDED = "discarded", "Discarded by a lead"


class DicomImport(Job):
    """A zipped DICOM study imported as one job in two phases (``docs/dicom.md``).

    Analysis (``phase`` analyse): the uploaded zip, spooled to a private temporary file outside
    storage, is read, grouped, checked, de-identified and converted series by series; the
    spooled file is removed when the analysis ends, however it ends. What is kept per series
    is de-identified: the NIfTI and the zip of de-identified slices under
    ``dicom-imports/<id>/`` in storage, and a row of numbers in ``series`` (never a header's
    text). Then the job waits in ``review`` (its ``status`` done) for a lead to correct the
    guessed roles and confirm, unless ``auto_confirm``. Creation (``phase`` create, a second
    run of the same job) makes the scans and their channels, removes the staged files and
    ends ``finished``.
    """

    task_name = "labeling.tasks.dicom_import_execute_task"
    lease_s = 4200.0  # the task's 1 h limit and a margin

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="dicom_imports")
    phase = models.CharField(max_length=16, choices=DicomImportPhase.choices, default=DicomImportPhase.ANALYSE)
    split = models.CharField(max_length=16, choices=Split.choices, default=Split.UNASSIGNED)
    auto_confirm = models.BooleanField(default=False, help_text="create the scans without waiting for a review")
    upload_name = models.CharField(
        max_length=80, blank=True, help_text="the spooled upload's neutral file name while it waits to be read"
    )
    upload_size = models.BigIntegerField(default=0)
    files = models.PositiveIntegerField(default=0, help_text="DICOM image files read")
    ignored_files = models.PositiveIntegerField(default=0, help_text="files that are not DICOM images")
    series = models.JSONField(default=list, help_text="one row per series: numbers, role, status; never header text")
    deidentification = models.JSONField(default=dict, help_text="profile, options, attribute names; never a value")
    summary = models.JSONField(default=dict, help_text="counts per outcome")
    error_code = models.CharField(max_length=32, blank=True)
    timings = models.JSONField(default=dict, help_text="seconds per step, all series together")
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"DICOM import {self.pk} of project {self.project_id} ({self.phase}, {self.status})"
