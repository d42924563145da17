"""Active learning: retrain on ground truth, score the unlabelled scans, order worklists, pre-labels.

- Training is batched: a new model version is queued after every ``al_retrain_every`` new
  training ground truths, or when a lead asks; never once per submission. It trains from
  scratch on the project's training split and is validated on the validation split, which
  never moves (scans keep the split they were given). Each version records the ground
  truths it saw.
- Scoring runs after each new model: MC-dropout entropy and BALD over the predicted
  foreground (see :mod:`active_learning.uncertainty`), the rater disagreement where some
  raters already submitted, and the pre-label. Open assignments take the project's
  strategy score as their worklist priority.
- Before any model (cold start), scans are ordered by diversity (greedy k-centre on image
  features), and the project says so in ``priority_note``.
- Several sequences: a version trains on the sequences the project declares
  (``Project.channels``), recorded as its network's ``input_roles``
  (:attr:`ModelVersion.channel_roles`); ground truths whose scans lack one are skipped and
  recorded (``hyperparameters["skipped_missing_channels"]``). Scoring and pre-labels read the
  version's own roles; a scan lacking one gets no score (the ranking says why) and no
  pre-label. A version with no roles reads the scan's image alone.
"""

from __future__ import annotations

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from consensus.models import GroundTruth
from consensus.services import final_ground_truth, write_file
from labeling import volumes
from labeling.models import (
    ALStrategy,
    Assignment,
    AssignmentStatus,
    Project,
    Scan,
    Split,
)
from labeling.selectors import MissingChannels, assignment_head, label_values
from labeling.services import audit_log
from mriannot.errors import Conflict
from mriannot.jobs import JobStatus, job_execute, job_progress, job_send_if_stale
from mriannot.queue import enqueue_on_commit
from mriannot.version import code_version

from . import native_grid, network, training, uncertainty, working_grid
from .models import EditingEffort, ModelVersion, ScanScore
from .selectors import latest_model, open_scans, prelabel_for, scan_input_files
from .tasks import model_version_train_task, scores_update_task

STRATEGY_KERNEL = {  # project strategy -> the score it ranks by
    ALStrategy.RANDOM: "random",
    ALStrategy.ENTROPY: "entropy",
    ALStrategy.BALD: "bald",
    ALStrategy.ENTROPY_DISAGREEMENT: "combined",
    ALStrategy.ENTROPY_STRATIFIED: "stratified",
}


#: A new version's network: patches at the scans' own resolution (``bench/bench_lesion_model.py``,
#: docs/active_learning.md). ``MRIANNOT_AL_NETWORK`` overrides any of it (``{"mode": "whole"}``: the
#: earlier whole-volume network on the 3.4 mm working grid).
PATCH_NETWORK = {"mode": "patch", "patch_shape": (64, 64, 64)}
#: Its training: 75 steps of 2 patches per training scan, 1,000 to 4,000 steps, and at most 14 min
#: of optimiser loop whatever the machine (a 20-scan version at 2 mm fits 15 min on 2 CPU cores).
PATCH_TRAINING = {
    "steps": 1000,
    "steps_per_scan": 75,
    "max_steps": 4000,
    "batch_size": 2,
    "learning_rate": 1e-2,
    "time_budget_s": 840.0,
}
#: MC-dropout passes per scan, and the top-k voxels a scan's uncertainty is the mean of.
MC_SAMPLES = 8
SCORE_TOP_K = 200


def network_config(*, project: Project) -> network.NetworkConfig:
    """The network of a new version: the project's labels, and one input channel per sequence it
    declares (none declared: the scan's image); patches at the scans' resolution unless overridden."""
    overrides = {**PATCH_NETWORK, **getattr(settings, "MRIANNOT_AL_NETWORK", {})}
    return network.NetworkConfig(
        labels=tuple(label_values(project=project)), input_roles=tuple(project.channels or ()), **overrides
    )


def training_config(*, seed: int, mode: str = "patch") -> training.TrainingConfig:
    defaults = PATCH_TRAINING if mode == "patch" else {}
    overrides = {**defaults, **getattr(settings, "MRIANNOT_AL_TRAINING", {})}
    return training.TrainingConfig(seed=seed, **overrides)


def _read_volume(field) -> tuple[np.ndarray, np.ndarray]:
    with default_storage.open(field.name, "rb") as handle:
        return volumes.read_array(handle.read())


def _read_input(scan: Scan, roles) -> np.ndarray:
    """The scan as a network reading ``roles`` takes it: ``(C, X, Y, Z)`` in that order, or the
    scan's image ``(X, Y, Z)`` when there are no roles. Raises :class:`MissingChannels`."""
    files = scan_input_files(scan=scan, roles=roles)
    if not roles:
        return _read_volume(files[0])[0]
    arrays = [_read_volume(field)[0] for field in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"scan {scan.pk}: its channels {list(roles)} have different shapes {sorted(shapes)}")
    return np.stack([a.astype(np.float32, copy=False) for a in arrays])


def _with_channels(truths: list[GroundTruth], roles, split: str) -> tuple[list[GroundTruth], list[dict]]:
    """The ground truths whose scans hold every sequence of ``roles``, and a record of the others."""
    usable, skipped = [], []
    for truth in truths:
        try:
            scan_input_files(scan=truth.scan, roles=roles)
        except MissingChannels as missing:
            skipped.append({"ground_truth": truth.pk, "scan": truth.scan_id, "split": split, "missing": missing.roles})
        else:
            usable.append(truth)
    return usable, skipped


def _truths(project: Project, split: str) -> list[GroundTruth]:
    truths = []
    for scan in Scan.objects.filter(project=project, split=split).order_by("id"):
        truth = final_ground_truth(scan=scan)  # not a scan back in rework
        if truth is not None:
            truths.append(truth)
    return truths


# --- training -----------------------------------------------------------------------------


def model_version_request(*, project: Project, actor=None, trigger: str = "manual") -> tuple[ModelVersion, bool]:
    """Queue a training of the next model version, unless one is already queued or running."""
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        pending = project.model_versions.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).first()
        if pending is not None:
            job_send_if_stale(pending)  # a lost message or a dead worker: send it again
            return pending, False
        truths = _truths(project, Split.TRAIN)
        if not truths:
            raise Conflict(
                "No training ground truth yet: the model trains on scans of the 'train' split that have "
                "a ground truth.",
                code="no_training_data",
            )
        if not _with_channels(truths, list(project.channels), Split.TRAIN)[0]:
            raise Conflict(
                f"No training scan with a ground truth holds every sequence the project declares "
                f"({', '.join(project.channels)}): add the missing channels first.",
                code="missing_channels",
            )
        number = (project.model_versions.aggregate(n=Max("version"))["n"] or 0) + 1
        version = ModelVersion.objects.create(project=project, version=number, trigger=trigger, requested_by=actor)
        audit_log(actor=actor, project=project, action="model.queue", target=version, data={"trigger": trigger})
        enqueue_on_commit(model_version_train_task, version.pk)
    return version, True


def retrain_if_due(*, project: Project) -> ModelVersion | None:
    """Queue a retraining when ``al_retrain_every`` training ground truths arrived since the last model
    (counting only those whose scans hold every sequence the project declares)."""
    seen: set[int] = set()
    latest = project.model_versions.exclude(status=JobStatus.FAILED).order_by("-version").first()
    if latest is not None:
        seen = set(latest.ground_truth_ids)
    usable, _ = _with_channels(_truths(project, Split.TRAIN), list(project.channels), Split.TRAIN)
    new = [t for t in usable if t.pk not in seen]
    if len(new) < project.al_retrain_every:
        return None
    version, _ = model_version_request(project=project, trigger="auto")
    return version


def _progress(version_id: int, fraction: float, message: str) -> None:
    job_progress(ModelVersion, version_id, fraction, message)


def model_version_train(*, version_id: int) -> ModelVersion:
    """Train a queued model version (idempotent: a finished version is returned as it is)."""
    return job_execute(ModelVersion, version_id, _train, select_related=("project",))


def _load_pairs(truths: list[GroundTruth], config: network.NetworkConfig) -> tuple[list, list]:
    images, targets = [], []
    for truth in truths:
        image = _read_input(truth.scan, config.input_roles)
        labels, _ = _read_volume(truth.file)
        volume, geometry = native_grid.network_input(image, config=config, spacing=truth.scan.spacing)
        images.append(volume)
        targets.append(native_grid.network_target(labels, geometry, config=config))
    return images, targets


def _train(version: ModelVersion) -> ModelVersion:
    project = version.project
    config = network_config(project=project)
    roles = list(config.input_roles)
    train_truths, skipped = _with_channels(_truths(project, Split.TRAIN), roles, Split.TRAIN)
    val_truths, skipped_val = _with_channels(_truths(project, Split.VALIDATION), roles, Split.VALIDATION)
    skipped += skipped_val
    lacking = sorted({role for row in skipped for role in row["missing"]})
    skip_note = f"; skipped {len(skipped)} ground truths lacking {', '.join(lacking)}" if skipped else ""
    if not train_truths:
        raise Conflict(
            f"No training scan with a ground truth holds every sequence the project declares ({', '.join(roles)}).",
            code="missing_channels",
        )
    _progress(version.pk, 0.02, f"preparing {len(train_truths)} training scans{skip_note}")
    images, targets = _load_pairs(train_truths, config)
    hyper = training_config(seed=version.version, mode=config.mode)
    result = training.train_segmentation(
        images,
        targets,
        config=config,
        training=hyper,
        callback=lambda f, m: _progress(version.pk, 0.05 + 0.8 * f, m),
    )
    _progress(version.pk, 0.9, f"validating on {len(val_truths)} scans")
    dice: dict[str, float | None] = {}
    dice_per_scan: dict[str, dict[str, float | None]] = {}
    calibration: dict = {}
    if val_truths:
        val_images, val_targets = _load_pairs(val_truths, config)
        per_scan, bins = training.evaluate_validation(result.model, val_images, val_targets, config=config)
        calibration = uncertainty.calibration_summary(bins)
        dice = {
            str(k): (None if not np.isfinite(v) else float(v))
            for k, v in training.mean_dice(per_scan, labels=config.labels[1:]).items()
        }
        dice_per_scan = {
            str(truth.scan_id): {str(k): (None if not np.isfinite(v) else float(v)) for k, v in scores.items()}
            for truth, scores in zip(val_truths, per_scan, strict=True)
        }
    metadata = {
        "project": project.pk,
        "version": version.version,
        "ground_truth_ids": [t.pk for t in train_truths],
        "validation_ground_truth_ids": [t.pk for t in val_truths],
        "validation_dice": dice,
        "validation_dice_per_scan": dice_per_scan,
        "calibration": calibration,
        "code_version": code_version(),
    }
    weights = write_file(
        f"models/{project.pk}/{version.version}.pt",
        network.save_checkpoint(result.model, config, metadata=metadata),
    )
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        version.weights.name = weights
        version.ground_truth_ids = metadata["ground_truth_ids"]
        version.validation_ground_truth_ids = metadata["validation_ground_truth_ids"]
        version.validation_dice = dice
        version.validation_dice_per_scan = dice_per_scan
        version.hyperparameters = {
            **result.hyperparameters(),
            "skipped_missing_channels": skipped,
            "steps_trained": len(result.losses),
            "training_seconds": round(result.seconds, 1),
            "calibration": calibration,
        }
        version.code_version = metadata["code_version"]
        version.mark_done(f"trained on {len(train_truths)} scans in {result.seconds:.0f} s{skip_note}")
        version.save()
        audit_log(
            actor=None,
            project=project,
            action="model.trained",
            target=version,
            data={
                "validation_dice": dice,
                "ground_truths": len(train_truths),
                "channels": roles,
                "skipped_missing_channels": len(skipped),
            },
        )
        scores_update_request(project=project)
    return version


# --- scoring, ranking, pre-labels -----------------------------------------------------------------


def scores_update_request(*, project: Project) -> None:
    """Queue a new ranking of the project's open scans (on commit: it sees what was just saved)."""
    enqueue_on_commit(scores_update_task, project.pk)


def _disagreement(scan: Scan) -> float:
    """1 - mean pairwise Dice of the raters who already submitted this scan (NaN with < 2)."""
    heads = [assignment_head(assignment=a) for a in scan.assignments.filter(status=AssignmentStatus.SUBMITTED)]
    heads = [head for head in heads if head is not None]
    if len(heads) < 2:  # nothing to compare: read no volume
        return float("nan")
    return float(uncertainty.rater_disagreement(np.stack([_read_volume(h.file)[0] for h in heads])))


def _rarest_label_volumes(volumes: list[dict]) -> tuple[str, np.ndarray]:
    """The label the model expects least of over these scans (mean expected volume) and each scan's
    expected volume of it, mL."""
    labels = sorted(volumes[0], key=int)
    label = min(labels, key=lambda value: float(np.mean([v[value] for v in volumes])))
    return label, np.array([v[label] for v in volumes], dtype=np.float64)


def _label_name(project: Project, value: str) -> str:
    label = project.label_classes.filter(value=int(value)).first()
    return f"{label.name} (label {value})" if label is not None else f"label {value}"


def scores_update(*, project_id: int) -> dict:
    """Score the project's open scans with the latest model (or order them for a cold start),
    store the scores and pre-labels, and set the open assignments' worklist priorities.

    Incremental: a scan that already has a score from this model (or cold-start features)
    is not run through the network again; only the ranking over all open scans and the
    rater disagreement are recomputed. So the task that each upload queues costs the new
    scans, not the whole project, and a retried task redoes nothing.
    """
    project = Project.objects.get(pk=project_id)
    scans = list(open_scans(project=project).select_related("project").prefetch_related("channels"))
    model_version = latest_model(project=project)
    strategy = STRATEGY_KERNEL[project.al_strategy]
    if not scans:
        return {"scored": 0, "computed": 0}
    known = {score.scan_id: score for score in ScanScore.objects.filter(model_version=model_version, scan__in=scans)}
    computed = 0
    unscorable: dict[int, list[str]] = {}  # scan -> the sequences the model reads that it lacks
    if model_version is None:
        config = network_config(project=project)
        features = []
        for scan in scans:
            cached = known.get(scan.pk)
            if cached is not None and cached.features is not None:
                features.append(np.asarray(cached.features, dtype=np.float64))
                continue
            working = working_grid.to_working(_read_volume(scan.image)[0], config=config, spacing=scan.spacing)[0]
            features.append(uncertainty.image_features(working))
            computed += 1
        scores = uncertainty.scores_from_order(uncertainty.diversity_order(np.stack(features)))
        rows = [
            dict(scan=s, score=float(v), strategy="diversity", features=[float(x) for x in f])
            for s, v, f in zip(scans, scores, features, strict=True)
        ]
        note = "Cold start: no model yet, scans in diversity order (greedy k-centre on image features)."
    else:
        model = config = None
        roles = model_version.channel_roles
        for scan in scans:  # a scan lacking a sequence the model reads: no score, no pre-label
            try:
                scan_input_files(scan=scan, roles=roles)
            except MissingChannels as missing:
                unscorable[scan.pk] = missing.roles
        scorable = [s for s in scans if s.pk not in unscorable]

        def reusable(cached):  # scored by this version; stratifying needs the expected volumes too
            return (
                cached is not None
                and bool(cached.prelabel)
                and (strategy != "stratified" or cached.expected_volume_ml is not None)
            )

        to_score = [s for s in scorable if not reusable(known.get(s.pk))]
        rows = []
        for scan in scorable:
            cached = known.get(scan.pk)
            if reusable(cached):
                rows.append(
                    dict(
                        scan=scan,
                        entropy=cached.entropy,
                        bald=cached.bald,
                        disagreement=_disagreement(scan),
                        whole_volume=cached.whole_volume,
                        prelabel=cached.prelabel.name,
                        expected_volume_ml=cached.expected_volume_ml,
                    )
                )
                continue
            if model is None:
                with default_storage.open(model_version.weights.name, "rb") as handle:
                    model, config = network.load_checkpoint(handle.read())
            computed += 1
            ModelVersion.objects.filter(pk=model_version.pk).update(
                message=f"scoring scan {computed} of {len(to_score)}"
            )
            image = _read_input(scan, roles)
            volume, geometry = native_grid.network_input(image, config=config, spacing=scan.spacing)
            mean, aleatoric = training.mc_dropout_moments(
                model, volume, n_samples=MC_SAMPLES, seed=scan.pk, config=config
            )
            top_k = SCORE_TOP_K if config.mode == "patch" else None  # whole-volume versions: as before
            summary = uncertainty.uncertainty_from_moments(mean, aleatoric, margin=3, top_k=top_k)
            prelabel = native_grid.network_prelabel(mean, geometry, config=config)
            voxel_ml = native_grid.voxel_volume_ml(geometry)
            name = write_file(
                f"prelabels/{scan.pk}/{model_version.version}.nii.gz",
                volumes.label_map_to_bytes(prelabel, np.asarray(scan.affine, dtype=np.float64)),
            )
            rows.append(
                dict(
                    scan=scan,
                    entropy=float(summary.entropy),
                    bald=float(summary.bald),
                    disagreement=_disagreement(scan),
                    whole_volume=bool(summary.whole_volume),
                    prelabel=name,
                    expected_volume_ml={
                        str(value): float(mean[c].sum()) * voxel_ml for c, value in enumerate(config.labels) if c
                    },
                )
            )
        how = ""  # what the order does, for the note
        if not rows:
            values = np.empty(0)
        elif strategy == "random":
            values = uncertainty.random_scores(len(rows), seed=model_version.version)
        elif strategy == "combined":
            values = uncertainty.combined_scores(
                np.array([r["entropy"] for r in rows]), np.array([r["disagreement"] for r in rows])
            )
        elif strategy == "stratified":
            label, expected = _rarest_label_volumes([r["expected_volume_ml"] for r in rows])
            order = uncertainty.stratified_order(
                np.array([r["entropy"] for r in rows]), expected, n_strata=project.al_retrain_every
            )
            values = uncertainty.scores_from_order(order)
            how = (
                f" One scan of each of {min(project.al_retrain_every, len(rows))} strata of the expected volume"
                f" of {_label_name(project, label)} in every {project.al_retrain_every}."
            )
        else:
            values = np.array([r[strategy] for r in rows])
        for row, value in zip(rows, values, strict=True):
            row["score"] = float(value)
            row["strategy"] = strategy
            if not np.isfinite(row["disagreement"]):
                row["disagreement"] = None
        label = dict(ALStrategy.choices)[project.al_strategy]
        note = f"Model v{model_version.version}: scans ordered by {label}.{how}"
        if unscorable:
            lacking = sorted({role for missing in unscorable.values() for role in missing})
            note += f" {len(unscorable)} not scored (no {', '.join(lacking)})."

    with transaction.atomic():
        for row in rows:
            ScanScore.objects.update_or_create(
                scan=row["scan"],
                model_version=model_version,
                defaults={k: v for k, v in row.items() if k != "scan"},
            )
            Assignment.objects.filter(scan=row["scan"]).exclude(status=AssignmentStatus.SUBMITTED).update(
                priority=row["score"]
            )
        if unscorable:  # no score: last in the worklists, as in the ranking
            Assignment.objects.filter(scan_id__in=list(unscorable)).exclude(status=AssignmentStatus.SUBMITTED).update(
                priority=0.0
            )
        note = note[:200]
        Project.objects.filter(pk=project.pk).update(priority_note=note)
        if model_version is not None:
            ModelVersion.objects.filter(pk=model_version.pk).update(scored_at=timezone.now(), message=note)
    return {
        "scored": len(rows),
        "computed": computed,
        "unscored": len(unscorable),
        "model_version": model_version.version if model_version else None,
        "note": note,
    }


def editing_effort_record(*, assignment: Assignment, revision) -> EditingEffort | None:
    """When the assignment started from a pre-label, keep Dice(pre-label, submitted) per label."""
    first = assignment.revisions.order_by("number").first()
    if first is None or first.source != "prelabel":
        return None
    score = (
        ScanScore.objects.filter(scan=assignment.scan, model_version__isnull=False, created_at__lte=first.created_at)
        .exclude(prelabel="")
        .order_by("-model_version__version")
        .first()
    ) or prelabel_for(assignment=assignment)
    if score is None:
        return None
    predicted, _ = _read_volume(score.prelabel)
    submitted, _ = _read_volume(revision.file)
    values = [v for v in label_values(project=assignment.scan.project) if v != 0]
    dice = training.dice_per_label(predicted, submitted, labels=values)
    clean = {str(k): (float(v) if np.isfinite(v) else None) for k, v in dice.items()}
    finite = [v for v in clean.values() if v is not None]
    effort, _ = EditingEffort.objects.update_or_create(
        assignment=assignment,
        defaults={
            "model_version": score.model_version,
            "dice": clean,
            "mean_dice": float(np.mean(finite)) if finite else None,
        },
    )
    return effort
