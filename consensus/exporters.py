"""Dataset writers (nnU-Net v2 raw, MONAI datalist, BIDS derivatives, DICOM-SEG) and the export checker.

No Django here: the service gathers :class:`ExportCase` objects (bytes and metadata) and
these functions lay them out in a folder, write the datasheet, the per-scan agreement CSV
and the sha256 manifest, then :func:`verify_export` re-reads everything before the export is
offered. Volumes are copied as stored (already RAS+, gzip), never resampled. A case holds one
image per channel (T1w, FLAIR, ...), all on the grid of the first. DICOM-SEG lives in
``consensus/dicomseg.py`` (imported when asked for: it needs highdicom).

The BIDS layout passes the BIDS validator (``bids-validator-deno``) without errors: every image
has a sidecar, files BIDS has no name for (datasheet, agreement, manifest, a channel of
unspecified contrast, the model cards) are listed in ``.bidsignore``.

Every format carries the model cards of the model versions behind the export (the versions
whose pre-labels a rater started from, and the project's current one) as
``models/v<version>/model_card.json`` and ``model_card.md``; the datasheet names them.

References: nnU-Net ``documentation/dataset_format.md``; MONAI
``monai/data/decathlon_datalist.py``; BIDS 1.10 derivatives (``src/derivatives/imaging.md``,
``common-principles.md``: BIDS URIs, ``.bidsignore``); Gebru et al., "Datasheets for
Datasets", CACM 2021; Mongan et al., CLAIM, Radiol AI 2020.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np

FORMATS = ("nnunet", "monai", "bids", "dicomseg")
SPLITS = ("train", "validation", "test", "unassigned")
#: BIDS anat suffix of each channel role. ``other`` (a contrast the project does not name) has
#: none: BIDS has no suffix for an unspecified contrast and any other would claim a weighting,
#: so that channel is written as ``..._desc-preproc_other.nii.gz`` and listed in ``.bidsignore``.
BIDS_SUFFIX = {"T1w": "T1w", "T2w": "T2w", "FLAIR": "FLAIR", "PD": "PDw"}
BIDS_VERSION = "1.10.0"


@dataclass(frozen=True)
class ExportCase:
    """One scan to export. ``case_id`` is a pseudonym (no patient data); volumes are .nii.gz bytes."""

    case_id: str
    split: str
    images: tuple[tuple[str, bytes], ...]  # (role, image bytes) per channel, in order; the first is the grid
    labels: bytes
    ground_truth: dict  # provenance: source, run, method, options, revisions, lead, code version
    agreement: dict  # per-scan figures for agreement.csv
    posterior: bytes | None = None  # 4-D float32, channel axis last, order = posterior_labels
    posterior_labels: tuple[int, ...] = ()
    raters: tuple[tuple[str, bytes], ...] = ()  # (rater pseudonym, label map bytes)
    dicom_source: bytes | None = None  # zip of the de-identified DICOM slices of the first channel
    #: A case whose volumes are read when its turn comes: ``load()`` returns the same case with its
    #: bytes (the others hold the roles and rater pseudonyms with empty bytes). The writers load one
    #: case at a time and drop it, so an export holds one case's volumes, not every case's.
    load: Callable[[], ExportCase] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ModelCard:
    """A model version's card as the export carries it: the JSON facts and the same card as Markdown."""

    version: int
    card: dict
    markdown: str

    @property
    def folder(self) -> str:
        return f"models/v{self.version}"


@dataclass(frozen=True)
class ExportSpec:
    """What the export is: format, options, the label schema and the facts for the datasheet.

    ``channels``: the role of each image of a case, in order (every case has them all); empty
    when the project declares none (one image per case, whose role may differ between cases).
    ``authors``: the people named in BIDS ``dataset_description.json``.
    ``model_cards``: written under ``models/``; ``datasheet["models"]`` says why each is there.
    """

    format: str
    project_name: str
    labels: dict[int, tuple[str, str]]  # value -> (name, colour); 0 = background
    include_raters: bool = False
    include_posterior: bool = False
    dataset_id: int = 500
    code_version: str = "unknown"
    datasheet: dict = field(default_factory=dict)
    channels: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    model_cards: tuple[ModelCard, ...] = ()


def _loaded(case: ExportCase) -> ExportCase:
    """The case with its volumes (see :attr:`ExportCase.load`)."""
    return case.load() if case.load is not None else case


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", text.title()) or "Dataset"


def _abbr(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", name.upper())[:8] or "L"


def _abbreviations(labels: dict[int, tuple[str, str]]) -> dict[int, str]:
    """Value -> a distinct alphanumeric abbreviation (BIDS ``label-<abbr>``, ``dseg.tsv``)."""
    out: dict[int, str] = {}
    for value in sorted(labels):
        abbr = base = _abbr(labels[value][0])
        n = 1
        while abbr in out.values():
            n += 1
            abbr = f"{base[: 8 - len(str(n))]}{n}"
        out[value] = abbr
    return out


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
    img.header.set_xyzt_units(xyz="mm", t="sec")
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def _channels(spec: ExportSpec, cases: Sequence[ExportCase]) -> tuple[str, ...]:
    """The channel roles of the export: ``spec.channels``, or when empty the cases' own roles
    (``T1w/T2w`` where single-image cases differ). Raises ValueError when cases disagree."""
    for case in cases:
        roles = [role for role, _ in case.images]
        if not roles or len(set(roles)) != len(roles):
            raise ValueError(f"{case.case_id}: needs one image per channel, got roles {roles}")
        if spec.channels and tuple(roles) != spec.channels:
            raise ValueError(f"{case.case_id}: channels {roles} differ from the export's {list(spec.channels)}")
    if spec.channels or not cases:
        return spec.channels
    counts = {len(case.images) for case in cases}
    if len(counts) != 1:
        raise ValueError(f"cases hold different numbers of channels: {sorted(counts)}")
    per_channel = [dict.fromkeys(case.images[k][0] for case in cases) for k in range(counts.pop())]
    return tuple("/".join(roles) for roles in per_channel)


def write_export(
    root: Path, spec: ExportSpec, cases: Sequence[ExportCase], progress: Callable[[float, str], None] | None = None
) -> dict:
    """Lay out ``cases`` under ``root`` in ``spec.format`` with datasheet, CSV and manifest.

    Returns a summary: counts per split, files written, the dataset folder name.
    """
    if spec.format not in FORMATS:
        raise ValueError(f"format: {spec.format!r} is not one of {FORMATS}")
    spec = replace(spec, channels=_channels(spec, cases))
    root.mkdir(parents=True, exist_ok=True)
    if spec.format == "dicomseg":
        from .dicomseg import write_dicomseg

        base = write_dicomseg(root, spec, [_loaded(c) for c in cases], progress or (lambda f, m: None))
    else:
        writer = {"nnunet": _write_nnunet, "monai": _write_monai, "bids": _write_bids}[spec.format]
        base = writer(root, spec, cases, progress or (lambda f, m: None))
    _write_model_cards(root / base, spec)
    _write_agreement_csv(root / base, cases)
    _write_datasheet(root / base, spec, cases)
    _write_manifest(root / base)
    counts = {split: sum(1 for c in cases if c.split == split) for split in SPLITS}
    return {
        "folder": base,
        "cases": len(cases),
        "per_split": counts,
        "format": spec.format,
        "channels": list(spec.channels),
    }


def _write_nnunet(root: Path, spec: ExportSpec, cases, progress) -> str:
    base = f"Dataset{spec.dataset_id:03d}_{_slug(spec.project_name)}"
    mapping = _consecutive(spec.labels)
    out = root / base
    n_train = 0
    for i, case in enumerate(cases):
        case = _loaded(case)  # one case's volumes at a time
        test = case.split == "test"
        images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
        for k, (_, raw) in enumerate(case.images):
            _write(out, f"{images}/{case.case_id}_{k:04d}.nii.gz", raw)
        _write(out, f"{labels}/{case.case_id}.nii.gz", _remap(case.labels, mapping))
        n_train += not test
        _write_extras(out, spec, case, mapping)
        progress((i + 1) / len(cases), f"wrote {case.case_id}")
    dataset = {
        "channel_names": {str(k): role for k, role in enumerate(spec.channels)},
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
        case = _loaded(case)  # one case's volumes at a time
        if len(case.images) == 1:
            image = _write(out, f"images/{case.case_id}.nii.gz", case.images[0][1])
        else:
            image = [_write(out, f"images/{case.case_id}_{role}.nii.gz", raw) for role, raw in case.images]
        label = _write(out, f"labels/{case.case_id}.nii.gz", case.labels)
        datalist[key[case.split]].append({"image": image, "label": label})
        _write_extras(out, spec, case, identity)
        progress((i + 1) / len(cases), f"wrote {case.case_id}")
    datalist["modality"] = {str(k): role for k, role in enumerate(spec.channels)}
    datalist["labels"] = {str(v): spec.labels[v][0] for v in sorted(spec.labels)}
    _write(out, "datalist.json", _json(datalist))
    return base


def _write_bids(root: Path, spec: ExportSpec, cases, progress) -> str:
    base = f"{_slug(spec.project_name)}-derivatives"
    out = root / base
    abbreviations = _abbreviations(spec.labels)
    rows = ["index\tname\tabbreviation\tcolor"] + [
        f"{v}\t{spec.labels[v][0]}\t{abbreviations[v]}\t{spec.labels[v][1]}" for v in sorted(spec.labels)
    ]
    lut = ("\n".join(rows) + "\n").encode()
    for i, case in enumerate(cases):
        case = _loaded(case)  # one case's volumes at a time
        stem = f"{case.case_id}/anat/{case.case_id}_space-orig"
        sources = []
        for k, (role, raw) in enumerate(case.images):
            name = f"{stem}_desc-preproc_{BIDS_SUFFIX.get(role, 'other')}"
            sources.append(f"bids::{_write(out, f'{name}.nii.gz', raw)}")
            about = "reoriented to RAS+, not resampled" if k == 0 else "on the grid of the first channel"
            _write(
                out,
                f"{name}.json",
                _json(
                    {
                        "Description": f"The {role} image as stored by mriannot ({about}).",
                        "SkullStripped": False,
                        "SpatialReference": "orig",
                    }
                ),
            )
        aligned = {"SpatialReference": sources[0], "Sources": sources}
        _write(out, f"{stem}_desc-staple_dseg.nii.gz", case.labels)
        _write(out, f"{stem}_desc-staple_dseg.tsv", lut)
        _write(
            out,
            f"{stem}_desc-staple_dseg.json",
            _json(
                {
                    "Description": "Consensus ground truth (multi-label STAPLE; adjudicated when flagged).",
                    "Manual": case.ground_truth.get("source") == "edited",
                    **aligned,
                    "Provenance": case.ground_truth,
                }
            ),
        )
        if spec.include_posterior and case.posterior is not None:
            channels, affine = _posterior_channels(case.posterior)
            for value, channel in zip(case.posterior_labels, channels, strict=True):
                if value == 0:
                    continue
                name = f"{stem}_label-{abbreviations[value]}_desc-staple_probseg"
                _write(out, f"{name}.nii.gz", _float_nifti(channel, affine))
                description = f"STAPLE posterior probability of {spec.labels[value][0]}."
                _write(out, f"{name}.json", _json({"Description": description, "Manual": False, **aligned}))
        if spec.include_raters:
            for rater, raw in case.raters:
                _write(out, f"{stem}_desc-{rater}_dseg.nii.gz", raw)
                _write(out, f"{stem}_desc-{rater}_dseg.tsv", lut)
                description = f"Labels submitted by pseudonymous rater {rater}, blind to the other raters."
                _write(
                    out,
                    f"{stem}_desc-{rater}_dseg.json",
                    _json({"Description": description, "Manual": True, **aligned}),
                )
        progress((i + 1) / len(cases), f"wrote {case.case_id}")
    _write(
        out,
        "dataset_description.json",
        _json(
            {
                "Name": f"{spec.project_name}: consensus segmentations",
                "BIDSVersion": BIDS_VERSION,
                "DatasetType": "derivative",
                **({"Authors": list(spec.authors)} if spec.authors else {}),
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
    descriptions = [
        "desc_id\tdescription",
        "desc-staple\tConsensus ground truth (STAPLE, adjudicated when flagged)",
        "desc-preproc\tThe scan as stored by mriannot: reoriented to RAS+, further channels on the first one's grid",
    ]
    raters = sorted({r for c in cases for r, _ in c.raters}) if spec.include_raters else []
    descriptions += [f"desc-{r}\tSubmitted labels of pseudonymous rater {r}" for r in raters]
    _write(out, "descriptions.tsv", ("\n".join(descriptions) + "\n").encode())
    _write(out, "descriptions.json", _json({"Description": "What each desc-<label> of this dataset names."}))
    ignore = ["/datasheet.json", "/agreement.csv", "/MANIFEST.sha256"]
    if spec.model_cards:
        ignore.append("/models")  # the folder itself: the validator reports "/models/" otherwise
    if any(role not in BIDS_SUFFIX for case in cases for role, _ in case.images):
        ignore += ["*_desc-preproc_other.nii.gz", "*_desc-preproc_other.json"]
    _write(out, ".bidsignore", ("\n".join(ignore) + "\n").encode())
    return base


def _write_model_cards(out: Path, spec: ExportSpec) -> None:
    for card in spec.model_cards:
        _write(out, f"{card.folder}/model_card.json", _json(card.card))
        _write(out, f"{card.folder}/model_card.md", card.markdown.encode())


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
        "channels": list(spec.channels),
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
        f"Images per scan: {', '.join(spec.channels)}"
        + (" (co-registered sequences; the first is the grid of the labels)." if len(spec.channels) > 1 else "."),
        _excluded_note(d.get("excluded_scans", [])),
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
    lines += _models_section(d.get("models", []))
    lines += [
        "",
        "## Preprocessing",
        "Images are stored as uploaded, reoriented to RAS+ (no resampling, no intensity change).",
        "A further channel acquired on another grid was resampled onto the first channel's grid when it was added"
        " (trilinear, by the affines, no registration)."
        if len(spec.channels) > 1
        else "",
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


def _models_section(models: list[dict]) -> list[str]:
    """The datasheet's paragraph on the model versions whose cards the export carries."""
    if not models:
        return []
    lines = [
        "",
        "### Models behind the labels",
        "",
        "Model cards of the model versions whose pre-labels raters started from, and of the project's",
        "current model, are in `models/` (JSON and Markdown).",
        "",
        "| model version | card | raters started from its pre-labels on | trained on (cases of this export) |",
        "|---|---|---|---|",
    ]
    for m in models:
        role = " (current)" if m.get("current") else ""
        started = ", ".join(m.get("prelabel_cases", [])) or "none"
        trained = f"{m.get('training_ground_truths', 0)} ground truths"
        if m.get("trained_on_cases"):
            trained += f" ({', '.join(m['trained_on_cases'])})"
        lines.append(f"| v{m['version']}{role} | `{m['card']}` | {started} | {trained} |")
    return lines


def _excluded_note(excluded: list[dict]) -> str:
    if not excluded:
        return ""
    reasons = "; ".join(f"scan {row['scan']}: {row['reason']}" for row in excluded)
    return f"Left out: {len(excluded)} scan(s) lacking a declared channel ({reasons})."


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
    """Re-read an export: every volume loads, labels match the grid of each of their images and
    the schema, the index files agree with the files, the manifest matches. Returns the problems found."""
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
    for card in spec.model_cards:
        for rel in (f"{card.folder}/model_card.json", f"{card.folder}/model_card.md"):
            if not (folder / rel).is_file():
                problems.append(f"{rel}: the model card of v{card.version} is missing")
    if spec.format == "dicomseg":
        from .dicomseg import verify_dicomseg

        return problems + verify_dicomseg(folder, spec=spec)

    allowed = set(_consecutive(spec.labels).values()) if spec.format == "nnunet" else set(spec.labels) | {0}
    pairs = _image_label_pairs(folder, spec)
    for image_rels, label_rel in pairs:
        if not image_rels:
            problems.append(f"{label_rel}: no image beside it")
            continue
        try:
            images = [nib.load(str(folder / rel)) for rel in image_rels]  # headers: the data is read below
            label, data = _load(folder / label_rel)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a problem to report, not a crash
            problems.append(f"{label_rel}: it or its images do not load ({exc})")
            continue
        for image_rel, image in zip(image_rels, images, strict=True):
            if image.shape[:3] != label.shape[:3]:
                problems.append(f"{label_rel}: shape {label.shape} differs from {image_rel} {image.shape}")
            if not np.allclose(image.affine, label.affine, atol=1e-3):
                problems.append(f"{label_rel}: affine differs from {image_rel}")
        if not np.issubdtype(data.dtype, np.integer):
            problems.append(f"{label_rel}: labels are not integers ({data.dtype})")
        extra = set(np.unique(data).tolist()) - allowed
        if extra:
            problems.append(f"{label_rel}: values {sorted(extra)} are not in the schema {sorted(allowed)}")
    labels = {label_rel for _, label_rel in pairs}
    for path in folder.rglob("*.nii.gz"):
        rel = path.relative_to(folder).as_posix()
        if rel in labels:
            continue
        try:
            _load(path)
        except Exception as exc:  # noqa: BLE001 - as above
            problems.append(f"{rel}: does not load ({exc})")
    problems += _check_index(folder, spec, pairs)
    return problems


def _image_label_pairs(folder: Path, spec: ExportSpec) -> list[tuple[list[str], str]]:
    """(the images of a case, its label map), relative to ``folder``, for every labelled case."""
    pairs = []
    if spec.format == "nnunet":
        n = len(spec.channels) or 1
        for images, labels in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
            for path in sorted((folder / labels).glob("*.nii.gz")):
                case = path.name.removesuffix(".nii.gz")
                pairs.append(([f"{images}/{case}_{k:04d}.nii.gz" for k in range(n)], f"{labels}/{path.name}"))
    elif spec.format == "monai":
        for path in sorted((folder / "labels").glob("*.nii.gz")):
            case = path.name.removesuffix(".nii.gz")
            single = folder / "images" / path.name
            found = [single] if single.exists() else sorted((folder / "images").glob(f"{case}_*.nii.gz"))
            pairs.append(([p.relative_to(folder).as_posix() for p in found], f"labels/{path.name}"))
    else:
        for path in sorted(folder.glob("sub-*/anat/*_dseg.nii.gz")):
            stem = re.sub(r"_desc-[A-Za-z0-9]+_dseg\.nii\.gz$", "", path.name)
            found = sorted(path.parent.glob(f"{stem}_desc-preproc_*.nii.gz"))
            pairs.append(([p.relative_to(folder).as_posix() for p in found], path.relative_to(folder).as_posix()))
    return pairs


def _check_index(folder: Path, spec: ExportSpec, pairs) -> list[str]:
    problems = []
    if spec.format == "nnunet":
        dataset = json.loads((folder / "dataset.json").read_text())
        n_train = len(list((folder / "labelsTr").glob("*.nii.gz")))
        if dataset.get("numTraining") != n_train:
            problems.append(f"dataset.json numTraining {dataset.get('numTraining')} but labelsTr holds {n_train}")
        channels = dataset.get("channel_names", {})
        if sorted(channels) != [str(k) for k in range(len(channels))] or (
            spec.channels and list(channels.values()) != list(spec.channels)
        ):
            problems.append(f"dataset.json channel_names {channels} are not the export's channels")
        images = len(list((folder / "imagesTr").glob("*.nii.gz")))
        if images != n_train * len(channels) or any(
            len(list((folder / "imagesTr").glob(f"*_{k:04d}.nii.gz"))) != n_train for k in range(len(channels))
        ):
            problems.append(f"imagesTr ({images} files) and labelsTr ({n_train}) do not pair up per channel")
        values = sorted(dataset.get("labels", {}).values())
        if values != list(range(len(values))):
            problems.append(f"dataset.json labels are not consecutive from 0: {values}")
    elif spec.format == "monai":
        datalist = json.loads((folder / "datalist.json").read_text())
        n = len(spec.channels) or 1
        for key in ("training", "validation", "test"):
            for item in datalist.get(key, []):
                images = item["image"] if isinstance(item["image"], list) else [item["image"]]
                if len(images) != n or isinstance(item["image"], list) != (n > 1):
                    problems.append(f"datalist.json {key}: {item['image']} is not one image per channel ({n})")
                for rel in (*images, item["label"]):
                    if not (folder / rel).is_file():
                        problems.append(f"datalist.json {key}: {rel} does not exist")
    else:
        description = json.loads((folder / "dataset_description.json").read_text())
        if description.get("DatasetType") != "derivative" or not description.get("GeneratedBy"):
            problems.append("dataset_description.json lacks DatasetType 'derivative' or GeneratedBy")
        if not pairs:
            problems.append("no sub-*/anat/*_dseg.nii.gz files")
        for images, label in pairs:
            if spec.channels and len(images) != len(spec.channels):
                problems.append(f"{label}: {len(images)} desc-preproc images beside it, not {len(spec.channels)}")
            sidecar = folder / label.replace(".nii.gz", ".json")
            if not sidecar.is_file():
                problems.append(f"{label}: no sidecar {sidecar.name}")
    return problems
