"""Dataset writers (nnU-Net v2 raw, MONAI datalist, BIDS derivatives) and the export checker.

No Django here: the service gathers :class:`ExportCase` objects (bytes and metadata) and
these functions lay them out in a folder, write the datasheet, the per-scan agreement CSV
and the sha256 manifest, then :func:`verify_export` re-reads everything before the export is
offered. Volumes are copied as stored (already RAS+, gzip), never resampled.

References: nnU-Net ``documentation/dataset_format.md``; MONAI
``monai/data/decathlon_datalist.py``; BIDS derivatives (``src/derivatives/imaging.md``);
Gebru et al., "Datasheets for Datasets", CACM 2021; Mongan et al., CLAIM, Radiol AI 2020.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

FORMATS = ("nnunet", "monai", "bids")
SPLITS = ("train", "validation", "test", "unassigned")


@dataclass(frozen=True)
class ExportCase:
    """One scan to export. ``case_id`` is a pseudonym (no patient data); volumes are .nii.gz bytes."""

    case_id: str
    split: str
    image: bytes
    labels: bytes
    ground_truth: dict  # provenance: source, run, method, options, revisions, lead, code version
    agreement: dict  # per-scan figures for agreement.csv
    posterior: bytes | None = None  # 4-D float32, channel axis last, order = posterior_labels
    posterior_labels: tuple[int, ...] = ()
    raters: tuple[tuple[str, bytes], ...] = ()  # (rater pseudonym, label map bytes)


@dataclass(frozen=True)
class ExportSpec:
    """What the export is: format, options, the label schema and the facts for the datasheet."""

    format: str
    project_name: str
    labels: dict[int, tuple[str, str]]  # value -> (name, colour); 0 = background
    include_raters: bool = False
    include_posterior: bool = False
    dataset_id: int = 500
    code_version: str = "unknown"
    datasheet: dict = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", text.title()) or "Dataset"


def _abbr(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", name.upper())[:8] or "L"


def _write(root: Path, rel: str, data: bytes) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return rel


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()


def _consecutive(labels: dict[int, tuple[str, str]]) -> dict[int, int]:
    """Schema value -> consecutive value (nnU-Net needs 0, 1, 2, ...)."""
    values = sorted(v for v in labels if v != 0)
    return {0: 0, **{value: i + 1 for i, value in enumerate(values)}}


def _remap(raw: bytes, mapping: dict[int, int]) -> bytes:
    if all(k == v for k, v in mapping.items()):
        return raw
    img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    data = np.asarray(img.dataobj)
    table = np.zeros(256, np.uint8)
    for k, v in mapping.items():
        table[k] = v
    out = nib.Nifti1Image(table[data], img.affine, img.header)
    return gzip.compress(out.to_bytes(), compresslevel=1, mtime=0)


def _posterior_channels(raw: bytes) -> list[np.ndarray]:
    img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    data = np.asarray(img.dataobj, dtype=np.float32)
    return [data[..., i] for i in range(data.shape[-1])], img.affine


def _float_nifti(data: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def write_export(
    root: Path, spec: ExportSpec, cases: Sequence[ExportCase], progress: Callable[[float, str], None] | None = None
) -> dict:
    """Lay out ``cases`` under ``root`` in ``spec.format`` with datasheet, CSV and manifest.

    Returns a summary: counts per split, files written, the dataset folder name.
    """
    if spec.format not in FORMATS:
        raise ValueError(f"format: {spec.format!r} is not one of {FORMATS}")
    root.mkdir(parents=True, exist_ok=True)
    writer = {"nnunet": _write_nnunet, "monai": _write_monai, "bids": _write_bids}[spec.format]
    base = writer(root, spec, cases, progress or (lambda f, m: None))
    _write_agreement_csv(root / base, cases)
    _write_datasheet(root / base, spec, cases)
    _write_manifest(root / base)
    counts = {split: sum(1 for c in cases if c.split == split) for split in SPLITS}
    return {"folder": base, "cases": len(cases), "per_split": counts, "format": spec.format}


def _write_nnunet(root: Path, spec: ExportSpec, cases, progress) -> str:
    base = f"Dataset{spec.dataset_id:03d}_{_slug(spec.project_name)}"
    mapping = _consecutive(spec.labels)
    out = root / base
    n_train = 0
    for i, case in enumerate(cases):
        test = case.split == "test"
        images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
        _write(out, f"{images}/{case.case_id}_0000.nii.gz", case.image)
        _write(out, f"{labels}/{case.case_id}.nii.gz", _remap(case.labels, mapping))
        n_train += not test
        _write_extras(out, spec, case, mapping)
        progress((i + 1) / len(cases), f"wrote {case.case_id}")
    dataset = {
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, **{spec.labels[v][0]: mapping[v] for v in sorted(spec.labels) if v != 0}},
        "numTraining": n_train,
        "file_ending": ".nii.gz",
        "name": spec.project_name,
        "description": "Consensus ground truth exported by mriannot; see README.md (datasheet).",
        "mriannot_label_values": {spec.labels[v][0]: v for v in sorted(spec.labels) if v != 0},
        "mriannot_splits": {c.case_id: c.split for c in cases},
    }
    _write(out, "dataset.json", _json(dataset))
    return base


def _write_extras(out: Path, spec: ExportSpec, case: ExportCase, mapping: dict[int, int]) -> None:
    if spec.include_posterior and case.posterior is not None:
        _write(out, f"posteriors/{case.case_id}.nii.gz", case.posterior)
    if spec.include_raters:
        for rater, raw in case.raters:
            _write(out, f"raters/{case.case_id}_{rater}.nii.gz", _remap(raw, mapping))


def _write_monai(root: Path, spec: ExportSpec, cases, progress) -> str:
    base = _slug(spec.project_name)
    out = root / base
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    key = {"train": "training", "unassigned": "training", "validation": "validation", "test": "test"}
    identity = {v: v for v in spec.labels} | {0: 0}
    for i, case in enumerate(cases):
        image = _write(out, f"images/{case.case_id}.nii.gz", case.image)
        label = _write(out, f"labels/{case.case_id}.nii.gz", case.labels)
        datalist[key[case.split]].append({"image": image, "label": label})
        _write_extras(out, spec, case, identity)
        progress((i + 1) / len(cases), f"wrote {case.case_id}")
    datalist["labels"] = {str(v): spec.labels[v][0] for v in sorted(spec.labels)}
    _write(out, "datalist.json", _json(datalist))
    return base


def _write_bids(root: Path, spec: ExportSpec, cases, progress) -> str:
    base = f"{_slug(spec.project_name)}-derivatives"
    out = root / base
    values = sorted(spec.labels)
    for i, case in enumerate(cases):
        stem = f"{case.case_id}/anat/{case.case_id}_space-orig"
        _write(out, f"{stem}_desc-preproc_T1w.nii.gz", case.image)
        _write(out, f"{stem}_desc-staple_dseg.nii.gz", case.labels)
        _write(
            out,
            f"{stem}_desc-staple_dseg.json",
            _json(
                {
                    "Manual": case.ground_truth.get("source") == "edited",
                    "SpatialReference": "orig",
                    "Sources": [f"bids:raw:{case.case_id}/anat/{case.case_id}_T1w.nii.gz"],
                    "Description": "Consensus ground truth (multi-label STAPLE; adjudicated when flagged).",
                    "Provenance": case.ground_truth,
                }
            ),
        )
        if spec.include_posterior and case.posterior is not None:
            channels, affine = _posterior_channels(case.posterior)
            for value, channel in zip(case.posterior_labels, channels, strict=True):
                if value == 0:
                    continue
                abbr = _abbr(spec.labels[value][0])
                _write(out, f"{stem}_label-{abbr}_desc-staple_probseg.nii.gz", _float_nifti(channel, affine))
        if spec.include_raters:
            for rater, raw in case.raters:
                _write(out, f"{stem}_desc-{rater}_dseg.nii.gz", raw)
        progress((i + 1) / len(cases), f"wrote {case.case_id}")
    _write(
        out,
        "dataset_description.json",
        _json(
            {
                "Name": f"{spec.project_name}: consensus segmentations",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [
                    {
                        "Name": "mriannot",
                        "Version": spec.code_version,
                        "Description": "Blinded multi-rater annotation fused with multi-label STAPLE, "
                        "ambiguous scans adjudicated by a lead.",
                    }
                ],
            }
        ),
    )
    rows = ["index\tname\tabbreviation\tcolor"] + [
        f"{v}\t{spec.labels[v][0]}\t{_abbr(spec.labels[v][0])}\t{spec.labels[v][1]}" for v in values
    ]
    _write(out, "dseg.tsv", ("\n".join(rows) + "\n").encode())
    descriptions = [
        "desc_id\tdescription",
        "staple\tConsensus ground truth (STAPLE, adjudicated when flagged)",
        "preproc\tThe scan as stored by mriannot: reoriented to RAS+, not resampled",
    ]
    raters = sorted({r for c in cases for r, _ in c.raters}) if spec.include_raters else []
    descriptions += [f"{r}\tSubmitted labels of pseudonymous rater {r}" for r in raters]
    _write(out, "descriptions.tsv", ("\n".join(descriptions) + "\n").encode())
    return base


AGREEMENT_COLUMNS = (
    "case_id",
    "split",
    "mean_pairwise_dice",
    "fleiss_kappa",
    "krippendorff_alpha",
    "ambiguity",
    "flagged",
    "ground_truth_source",
    "raters",
)


def _write_agreement_csv(out: Path, cases) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=AGREEMENT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for case in cases:
        writer.writerow(
            {
                "case_id": case.case_id,
                "split": case.split,
                **case.agreement,
                "ground_truth_source": case.ground_truth.get("source"),
            }
        )
    _write(out, "agreement.csv", buffer.getvalue().encode())


def _write_datasheet(out: Path, spec: ExportSpec, cases) -> None:
    sheet = {
        "dataset": spec.project_name,
        "format": spec.format,
        "code_version": spec.code_version,
        "cases": len(cases),
        "per_split": {split: sum(1 for c in cases if c.split == split) for split in SPLITS},
        "labels": {str(v): {"name": n, "color": c} for v, (n, c) in sorted(spec.labels.items())},
        **spec.datasheet,
        "ground_truth_per_case": {c.case_id: c.ground_truth for c in cases},
    }
    _write(out, "datasheet.json", _json(sheet))
    d = spec.datasheet
    lines = [
        f"# Datasheet: {spec.project_name}",
        "",
        "Written by mriannot following *Datasheets for Datasets* (Gebru et al., 2021) and the ground-truth",
        "items of CLAIM (Mongan et al., 2020). Machine-readable copy: `datasheet.json`.",
        "",
        "## Motivation",
        d.get("motivation", "Segmentation ground truth for training and evaluating brain-MRI models."),
        "",
        "## Composition",
        f"{len(cases)} scans: " + ", ".join(f"{k} {v}" for k, v in sheet["per_split"].items() if v) + ".",
        "Labels: " + ", ".join(f"{v} = {n}" for v, (n, _) in sorted(spec.labels.items())) + ".",
        d.get("composition_note", ""),
        "",
        "## Collection and labelling (CLAIM: ground truth)",
        f"- Ground-truth definition: {d.get('ground_truth_definition', '')}",
        f"- Annotators: {d.get('annotators', '')}",
        f"- Annotation tool: {d.get('tool', 'mriannot (browser viewer built on NiiVue)')}",
        f"- Raters per scan: {d.get('raters_per_scan', '')}; raters were blind to each other's labels.",
        f"- Consensus: {d.get('consensus_method', '')}",
        f"- Disagreement resolution: {d.get('adjudication', '')}",
        f"- Inter-rater variability: {d.get('agreement_summary', '')} Per-scan figures: `agreement.csv`.",
        "",
        "### Rater performance (STAPLE estimates, pseudonymous raters)",
        "",
        "| rater | scans | mean Dice vs consensus | mean sensitivity | mean specificity |",
        "|---|---|---|---|---|",
    ]
    for row in d.get("raters", []):
        lines.append(
            f"| {row['rater']} | {row['scans']} | {_fmt(row.get('dice'))} | {_fmt(row.get('sensitivity'))} | "
            f"{_fmt(row.get('specificity'))} |"
        )
    lines += [
        "",
        "## Preprocessing",
        "Images are stored as uploaded, reoriented to RAS+ (no resampling, no intensity change).",
        "",
        "## Uses",
        d.get("uses", "Training and evaluating segmentation models; measuring inter-rater agreement."),
        "",
        "## Distribution",
        "Subject identifiers are pseudonyms (case ids); no free-text patient data is included. Every file's",
        "sha256 is in `MANIFEST.sha256`.",
        "",
        "## Maintenance",
        f"Exported by mriannot {spec.code_version}; each ground truth names its consensus run and the lead who",
        "adjudicated it (datasheet.json: ground_truth_per_case).",
        "",
    ]
    _write(out, "README.md", "\n".join(lines).encode())


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _write_manifest(out: Path) -> None:
    lines = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST.sha256"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(out).as_posix()}")
    (out / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


# --- checking --------------------------------------------------------------------------------


def _load(path: Path):
    img = nib.load(str(path))
    return img, np.asarray(img.dataobj)


def verify_export(folder: Path, *, spec: ExportSpec) -> list[str]:
    """Re-read an export: every volume loads, labels match their image's grid and the schema,
    the index files agree with the files, the manifest matches. Returns the problems found."""
    problems: list[str] = []
    manifest = folder / "MANIFEST.sha256"
    if not manifest.exists():
        return ["MANIFEST.sha256 is missing"]
    listed = {}
    for line in manifest.read_text().splitlines():
        digest, rel = line.split("  ", 1)
        listed[rel] = digest
    on_disk = {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "MANIFEST.sha256"
    }
    if set(listed) != on_disk:
        problems.append(f"manifest and files differ: {sorted(set(listed) ^ on_disk)[:5]}")
    for rel, digest in listed.items():
        if rel in on_disk and hashlib.sha256((folder / rel).read_bytes()).hexdigest() != digest:
            problems.append(f"{rel}: sha256 does not match the manifest")

    allowed = set(_consecutive(spec.labels).values()) if spec.format == "nnunet" else set(spec.labels) | {0}
    pairs = _image_label_pairs(folder, spec)
    for image_rel, label_rel in pairs:
        try:
            image, _ = _load(folder / image_rel)
            label, data = _load(folder / label_rel)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a problem to report, not a crash
            problems.append(f"{label_rel}: does not load ({exc})")
            continue
        if image.shape[:3] != label.shape[:3]:
            problems.append(f"{label_rel}: shape {label.shape} differs from its image {image.shape}")
        if not np.allclose(image.affine, label.affine, atol=1e-3):
            problems.append(f"{label_rel}: affine differs from its image")
        if not np.issubdtype(data.dtype, np.integer):
            problems.append(f"{label_rel}: labels are not integers ({data.dtype})")
        extra = set(np.unique(data).tolist()) - allowed
        if extra:
            problems.append(f"{label_rel}: values {sorted(extra)} are not in the schema {sorted(allowed)}")
    for path in folder.rglob("*.nii.gz"):
        rel = path.relative_to(folder).as_posix()
        if rel in {r for pair in pairs for r in pair}:
            continue
        try:
            _load(path)
        except Exception as exc:  # noqa: BLE001 - as above
            problems.append(f"{rel}: does not load ({exc})")
    problems += _check_index(folder, spec, pairs)
    return problems


def _image_label_pairs(folder: Path, spec: ExportSpec) -> list[tuple[str, str]]:
    pairs = []
    if spec.format == "nnunet":
        for images, labels in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
            for path in sorted((folder / labels).glob("*.nii.gz")):
                case = path.name.removesuffix(".nii.gz")
                pairs.append((f"{images}/{case}_0000.nii.gz", f"{labels}/{path.name}"))
    elif spec.format == "monai":
        for path in sorted((folder / "labels").glob("*.nii.gz")):
            pairs.append((f"images/{path.name}", f"labels/{path.name}"))
    else:
        for path in sorted(folder.glob("sub-*/anat/*_dseg.nii.gz")):
            image = re.sub(r"_desc-[A-Za-z0-9]+_dseg\.nii\.gz$", "_desc-preproc_T1w.nii.gz", path.name)
            pairs.append(((path.parent / image).relative_to(folder).as_posix(), path.relative_to(folder).as_posix()))
    return pairs


def _check_index(folder: Path, spec: ExportSpec, pairs) -> list[str]:
    problems = []
    if spec.format == "nnunet":
        dataset = json.loads((folder / "dataset.json").read_text())
        n_train = len(list((folder / "labelsTr").glob("*.nii.gz")))
        if dataset.get("numTraining") != n_train:
            problems.append(f"dataset.json numTraining {dataset.get('numTraining')} but labelsTr holds {n_train}")
        if len(list((folder / "imagesTr").glob("*_0000.nii.gz"))) != n_train:
            problems.append("imagesTr and labelsTr do not pair up")
        values = sorted(dataset.get("labels", {}).values())
        if values != list(range(len(values))):
            problems.append(f"dataset.json labels are not consecutive from 0: {values}")
    elif spec.format == "monai":
        datalist = json.loads((folder / "datalist.json").read_text())
        for key in ("training", "validation", "test"):
            for item in datalist.get(key, []):
                for rel in (item["image"], item["label"]):
                    if not (folder / rel).is_file():
                        problems.append(f"datalist.json {key}: {rel} does not exist")
    else:
        description = json.loads((folder / "dataset_description.json").read_text())
        if description.get("DatasetType") != "derivative" or not description.get("GeneratedBy"):
            problems.append("dataset_description.json lacks DatasetType 'derivative' or GeneratedBy")
        if not pairs:
            problems.append("no sub-*/anat/*_dseg.nii.gz files")
    return problems
