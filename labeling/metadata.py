"""Scan metadata: the only columns a scan carries about its acquisition and its subject.

Pure (the standard library and :mod:`mriannot.refusals`): no Django, no database. The API,
the upload form and the CSV import all validate through :func:`clean_record`, so one rule
decides what may be stored.

What is stored, and why nothing else
------------------------------------
Six columns, :data:`COLUMNS`:

- ``site`` and ``scanner``: short identifiers of a place and a scanner model (``"SITE-A"``,
  ``"Prisma 3T"``), 1-64 characters of letters, digits, space, ``.``, ``_`` and ``-``
  (:data:`IDENTIFIER_PATTERN`). They are the only free text, so they are bounded and checked:
  anything that looks like a date (``2024-03-01``, ``01/03/24``) or holds a run of
  :data:`MAX_DIGIT_RUN` + 1 digits or more (a record number, a phone number, a birth date
  written ``19670312``) is refused. This does not catch a name on its own; it keeps the
  common accidents out (a subject key or a study date pasted into the wrong column).
- ``field_strength``: tesla, a number from :data:`FIELD_STRENGTH_MIN_T` to
  :data:`FIELD_STRENGTH_MAX_T`.
- ``sequence``, ``sex``, ``age_band``: controlled vocabularies (:data:`SEQUENCES`,
  :data:`SEXES`, :data:`AGE_BANDS`), matched without regard to case. An age is given as a
  band, never as an age in years.

Every column may be empty: not recorded. ``"unknown"`` (sex, age band) says the source was
asked and does not know. Unknown columns are refused by name (:func:`check_columns`): no
free-text patient data (names, dates of birth, notes) can be stored through this door.

Breakdowns
----------
:func:`breakdown` groups per-scan figures (a Dice per label) by each column, for the
agreement dashboard and the model card.

>>> clean_record({"site": " SITE-A ", "field_strength": "3", "sequence": "flair", "sex": "f"})
{'site': 'SITE-A', 'field_strength': 3.0, 'sequence': 'FLAIR', 'sex': 'F'}
>>> clean_record({"site": "Smith 1967-03-12"})
Traceback (most recent call last):
...
labeling.metadata.MetadataError: site: 'Smith 1967-03-12' looks like a date...
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mriannot.refusals import InputRefused

#: The metadata columns, in the order the pages show them.
COLUMNS = ("site", "scanner", "field_strength", "sequence", "sex", "age_band")

#: What people call each column.
COLUMN_TITLES = {
    "site": "Site",
    "scanner": "Scanner",
    "field_strength": "Field strength (T)",
    "sequence": "Sequence",
    "sex": "Sex",
    "age_band": "Age band",
}

SEQUENCES = ("T1w", "T2w", "FLAIR", "PD", "other")
SEXES = ("F", "M", "other", "unknown")
AGE_BANDS = ("0-17", "18-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80+", "unknown")
VOCABULARIES = {"sequence": SEQUENCES, "sex": SEXES, "age_band": AGE_BANDS}

#: Site and scanner identifiers: a letter or digit first, then letters, digits, space, ``._-``.
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
IDENTIFIER_MAX_CHARS = 64
#: The longest run of digits an identifier may hold ("MR750", "uMR 790" pass; "19670312" does not).
MAX_DIGIT_RUN = 4
_DATE_LIKE = re.compile(r"\d{1,4}[-./_ ]\d{1,2}[-./_ ]\d{1,4}")
_DIGIT_RUN = re.compile(r"\d{" + str(MAX_DIGIT_RUN + 1) + ",}")

FIELD_STRENGTH_MIN_T = 0.05
FIELD_STRENGTH_MAX_T = 14.0

#: The group of an empty value in a breakdown.
NOT_RECORDED = "not recorded"


class MetadataError(InputRefused):
    """Metadata refused: ``errors`` maps each refused column to why."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        message = "; ".join(f"{column}: {why}" for column, why in self.errors.items())
        super().__init__("invalid_metadata", message)


def _identifier(column: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"give a short identifier as text, not {type(value).__name__}")
    text = value.strip()
    if not text:
        return ""
    shown = text if len(text) <= 40 else text[:40] + "..."
    if len(text) > IDENTIFIER_MAX_CHARS or not IDENTIFIER_PATTERN.match(text):
        raise ValueError(
            f"{shown!r} is not a short identifier: use 1-{IDENTIFIER_MAX_CHARS} letters, digits, spaces, "
            "'.', '_' or '-', starting with a letter or digit (e.g. 'SITE-A', 'Prisma 3T')"
        )
    if _DATE_LIKE.search(text):
        raise ValueError(
            f"{shown!r} looks like a date; {column} is an identifier of equipment or a place, not of a patient"
        )
    if _DIGIT_RUN.search(text):
        raise ValueError(
            f"{shown!r} holds more than {MAX_DIGIT_RUN} digits in a row, like a record number or a date; "
            f"{column} is an identifier of equipment or a place, not of a patient"
        )
    return text


def _field_strength(value) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError("give a number of tesla, e.g. 1.5 or 3")
    if isinstance(value, str):
        text = value.strip().removesuffix("T").removesuffix("t").strip()
        if len(text) > 16:
            raise ValueError("give a number of tesla, e.g. 1.5 or 3")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{value.strip()[:20]!r} is not a number of tesla (e.g. 1.5 or 3)") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError("give a number of tesla, e.g. 1.5 or 3")
    if not math.isfinite(number) or not FIELD_STRENGTH_MIN_T <= number <= FIELD_STRENGTH_MAX_T:
        raise ValueError(f"give a field strength from {FIELD_STRENGTH_MIN_T} to {FIELD_STRENGTH_MAX_T} T")
    return round(number, 3)


def _choice(column: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"choose one of {', '.join(VOCABULARIES[column])}")
    text = value.strip()
    if not text:
        return ""
    for option in VOCABULARIES[column]:
        if text.lower() == option.lower():
            return option
    shown = text if len(text) <= 40 else text[:40] + "..."
    hint = " (an age band, not an age)" if column == "age_band" and text.isdigit() else ""
    raise ValueError(f"{shown!r} is not one of {', '.join(VOCABULARIES[column])}{hint}")


def clean_value(column: str, value):
    """One column's value as stored ("" or None: not recorded), or ValueError saying why not."""
    if column in ("site", "scanner"):
        return _identifier(column, value)
    if column == "field_strength":
        return _field_strength(value)
    if column in VOCABULARIES:
        return _choice(column, value)
    raise ValueError(f"unknown column; the metadata columns are {', '.join(COLUMNS)}")


def clean_record(record: Mapping[str, object]) -> dict:
    """The columns given in ``record``, cleaned; :class:`MetadataError` naming every refused column.

    Only the columns present are returned (a partial update stays partial); an unknown
    column is refused.

    >>> clean_record({"age_band": "80+", "scanner": "Signa HDxt"})
    {'age_band': '80+', 'scanner': 'Signa HDxt'}
    >>> clean_record({"age_band": "42", "sex": "female"})
    Traceback (most recent call last):
    ...
    labeling.metadata.MetadataError: age_band: '42' is not one of ... (an age band, not an age); sex: ...
    """
    cleaned, errors = {}, {}
    for column, value in record.items():
        try:
            cleaned[column] = clean_value(column, value)
        except ValueError as error:
            errors[column] = str(error)
    if errors:
        raise MetadataError(errors)
    return cleaned


def group_of(column: str, value) -> str:
    """The group a stored value falls in, as shown in a breakdown ("3 T", "FLAIR", "not recorded").

    >>> group_of("field_strength", 1.5), group_of("field_strength", 3.0), group_of("site", "")
    ('1.5 T', '3 T', 'not recorded')
    """
    if value is None or value == "":
        return NOT_RECORDED
    if column == "field_strength":
        return f"{float(value):g} T"
    return str(value)


# --- CSV -------------------------------------------------------------------------------------

#: Columns that say which scan a CSV row is about.
KEY_COLUMNS = ("scan", "subject_id", "session_id")
CSV_MAX_BYTES = 2 * 1024 * 1024
CSV_MAX_ROWS = 20_000


@dataclass(frozen=True)
class CsvRow:
    """One data row of a metadata CSV: its line number, the keys, and the metadata cells given."""

    line: int
    keys: dict
    cells: dict


def check_columns(header: Iterable[str]) -> list[str]:
    """The header's column names (trimmed, lower case), or :class:`InputRefused` for an unknown
    or repeated column, or a header without ``scan`` or ``subject_id``."""
    names = [str(name).strip().lower() for name in header]
    allowed = set(KEY_COLUMNS) | set(COLUMNS)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        shown = ", ".join(repr(n[:40]) for n in unknown[:5])
        raise InputRefused(
            "unknown_columns",
            f"Unknown column(s) {shown}: only {', '.join((*KEY_COLUMNS, *COLUMNS))} are accepted. "
            "Free-text patient data (names, dates, notes) is never stored.",
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputRefused("repeated_columns", f"Column(s) {', '.join(repeated)} appear more than once.")
    if "scan" not in names and "subject_id" not in names:
        raise InputRefused(
            "missing_key_column",
            "Name each row's scan: add a 'scan' column (scan id) or 'subject_id' (and 'session_id').",
        )
    if not set(names) & set(COLUMNS):
        raise InputRefused("no_metadata_columns", f"Add at least one metadata column: {', '.join(COLUMNS)}.")
    return names


def parse_csv(raw: bytes) -> list[CsvRow]:
    """The data rows of a metadata CSV (UTF-8, a header row first); refuses the file as a whole
    when it is too large, not text, or its header names a column that is not ours.

    Empty cells are left out of ``cells`` (empty: leave the stored value as it is).

    >>> rows = parse_csv(b"subject_id,site,sex\\nsub-01,SITE-A,F\\nsub-02,,M\\n")
    >>> [(r.line, r.keys, r.cells) for r in rows]
    [(2, {'subject_id': 'sub-01'}, {'site': 'SITE-A', 'sex': 'F'}), (3, {'subject_id': 'sub-02'}, {'sex': 'M'})]
    """
    if len(raw) > CSV_MAX_BYTES:
        raise InputRefused("too_large", f"The CSV is {len(raw)} bytes; at most {CSV_MAX_BYTES} are accepted.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputRefused("not_utf8", "The CSV is not UTF-8 text; save it as CSV (UTF-8).") from None
    if "\x00" in text:
        raise InputRefused("not_text", "The CSV holds NUL characters: it is not a text file.")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise InputRefused("empty_csv", "The CSV is empty: a header row and one row per scan are expected.")
        names = check_columns(header)
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(rows) >= CSV_MAX_ROWS:
                raise InputRefused("too_many_rows", f"The CSV has more than {CSV_MAX_ROWS} rows; split it.")
            line = reader.line_num
            if len(values) != len(names):
                rows.append(CsvRow(line, {}, {"_": f"{len(values)} cells where the header has {len(names)}"}))
                continue
            record = {n: v.strip() for n, v in zip(names, values, strict=True)}
            keys = {n: record[n] for n in KEY_COLUMNS if record.get(n)}
            cells = {n: record[n] for n in COLUMNS if record.get(n)}
            rows.append(CsvRow(line, keys, cells))
    except csv.Error as error:
        raise InputRefused("bad_csv", f"The CSV cannot be read: {error}.") from None
    return rows


# --- breakdowns ------------------------------------------------------------------------------


def breakdown(
    values: Mapping[int, Mapping[int, Iterable[float | None]]],
    metadata: Mapping[int, Mapping[str, object]],
    *,
    columns: Iterable[str] = COLUMNS,
) -> list[dict]:
    """Per-scan figures grouped by each metadata column: one row per column, group and label.

    Parameters
    ----------
    values : mapping of scan id to (label value to figures)
        The scan's figures for each label, e.g. the Dice of every rater pair, or a model's
        validation Dice (one figure). ``None`` and NaN are left out.
    metadata : mapping of scan id to (column to stored value)
    columns : the columns to group by (all of :data:`COLUMNS` by default)

    Returns
    -------
    list of dict
        ``column``, ``group`` (see :func:`group_of`), ``label``, ``scans`` (n: scans of the group
        with a figure for the label), ``figures`` (how many figures) and ``mean`` (of the figures).
        Groups are sorted by name, "not recorded" last; a group without a figure is left out.

    Examples
    --------
    >>> values = {1: {1: [0.8, 0.6]}, 2: {1: [0.9]}, 3: {1: [None]}}
    >>> meta = {1: {"site": "A"}, 2: {"site": "B"}, 3: {"site": "A"}}
    >>> [(r["group"], r["scans"], r["figures"], round(r["mean"], 3)) for r in breakdown(values, meta, columns=["site"])]
    [('A', 1, 2, 0.7), ('B', 1, 1, 0.9)]
    """
    groups: dict[tuple[str, str, int], list[tuple[int, float]]] = {}
    for scan, per_label in values.items():
        meta = metadata.get(scan, {})
        for column in columns:
            group = group_of(column, meta.get(column))
            for label, figures in per_label.items():
                finite = [float(f) for f in figures if f is not None and math.isfinite(float(f))]
                if finite:
                    groups.setdefault((column, group, int(label)), []).extend((scan, f) for f in finite)
    order = {column: i for i, column in enumerate(columns)}
    rows = []
    for (column, group, label), figures in sorted(
        groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1] == NOT_RECORDED, kv[0][1], kv[0][2])
    ):
        rows.append(
            {
                "column": column,
                "group": group,
                "label": label,
                "scans": len({scan for scan, _ in figures}),
                "figures": len(figures),
                "mean": sum(f for _, f in figures) / len(figures),
            }
        )
    return rows
