"""HTTP API of the server's editing operations (labeling/editing.py): a label map in, a label map out.

``POST /api/v1/assignments/<id>/operations/<operation>/?<params>`` with the rater's current
labels as the body (gzip NIfTI on the scan's grid, as a revision save sends it) answers the
result on the same grid (``application/gzip``) with ``X-Changed-Voxels`` and ``X-Operation-Ms``.
Nothing is saved: the viewer applies the result as one undoable edit and its autosave saves it.

Who: the assignment's own annotator while it is not submitted (409 once it is), and the
project's leads and admins (the review page's lead edit); anyone else is answered 404 (blinding).
Parameters and what each operation does: ``docs/editing.md``.
"""

from __future__ import annotations

import math
import time

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.views import APIView

from mriannot.errors import Conflict, NotFound, ValidationFailed

from . import editing, selectors, volumes
from .models import Assignment, AssignmentStatus, Scan
from .parsers import NIFTI_PARSERS

#: Query parameters of each operation (``locked`` is common to all).
OPERATION_PARAMETERS = {
    "islands": ("label", "mode", "min_mm3", "point"),
    "margin": ("label", "mm"),
    "smooth": ("label", "mm"),
    "interpolate": ("label", "axis"),
    "grow": ("channel", "roi", "outside"),
}
#: The longest query value read (a roi is six numbers).
VALUE_MAX_CHARS = 200


def _param(request, name: str, *, required: bool = True) -> str | None:
    value = request.query_params.get(name)
    if value is None or value.strip() == "":
        if required:
            raise ValidationFailed(f"Parameter {name!r} is required.", code=f"missing_{name}")
        return None
    if len(value) > VALUE_MAX_CHARS:
        raise ValidationFailed(f"Parameter {name!r} is too long.", code=f"bad_{name}")
    return value.strip()


def _integers(text: str, *, name: str, count: int | None = None) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isascii() and part.lstrip("-").isdigit() and len(part) <= 6 for part in parts) or (
        count is not None and len(parts) != count
    ):
        what = f"{count} integers" if count else "integers"
        raise ValidationFailed(
            f"Parameter {name!r}: expected {what} separated by commas, got {text!r}.", code=f"bad_{name}"
        )
    return [int(part) for part in parts]


def _number(text: str, *, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValidationFailed(f"Parameter {name!r}: expected a finite number, got {text!r}.", code=f"bad_{name}")
    return value


def _label(text: str, schema: list[int], *, allow_all: bool = False) -> int | None:
    if allow_all and text.lower() == "all":
        return None
    values = [v for v in schema if v != 0]
    if not (text.isascii() and text.isdigit() and len(text) <= 3 and int(text) in values):
        also = " or 'all'" if allow_all else ""
        raise ValidationFailed(
            f"Parameter 'label': expected a label value of this project ({', '.join(map(str, values))}){also}, "
            f"got {text!r}.",
            code="bad_label",
        )
    return int(text)


def _locked(request) -> list[int]:
    text = _param(request, "locked", required=False)
    if text is None:
        return []
    values = _integers(text, name="locked")
    if not all(1 <= v <= 255 for v in values):
        raise ValidationFailed(
            f"Parameter 'locked': label values 1..255 (background cannot be locked), got {text!r}.", code="bad_locked"
        )
    return values


def _check_parameters(request, operation: str) -> None:
    allowed = {"locked", *OPERATION_PARAMETERS[operation]}
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ValidationFailed(
            f"Unknown parameter(s) for {operation}: {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}.",
            code="unknown_parameter",
        )


def _editable_assignment(request, assignment_id: int) -> Assignment:
    """The assignment, if this user may run operations on it: 404 unseen, 409 submitted (its annotator)."""
    assignment = get_object_or_404(selectors.assignment_list(user=request.user), pk=assignment_id)
    if selectors.user_manages_project(user=request.user, project=assignment.scan.project):
        return assignment
    if assignment.annotator_id != request.user.pk:
        raise NotFound("No such assignment.")
    if assignment.status == AssignmentStatus.SUBMITTED:
        raise Conflict("This assignment is submitted and frozen; its labels take no more edits.", code="submitted")
    return assignment


def _body(request) -> bytes:
    raw = request.data
    if isinstance(raw, bytes):
        return raw
    raise ValidationFailed(
        "Send the label volume as the request body (Content-Type: application/octet-stream), "
        "as a revision save sends it.",
        code="missing_file",
    )


def _read(field) -> np.ndarray:
    with default_storage.open(field.name, "rb") as handle:
        return volumes.read_array(handle.read())[0]


def _channel_image(scan: Scan, role: str | None) -> np.ndarray:
    roles = [row["role"] for row in selectors.scan_channel_list(scan=scan) if row["present"]]
    if role is None or role == roles[0]:
        return _read(scan.image)
    channel = selectors.scan_channel(scan=scan, role=role) if role in roles else None
    if channel is None:
        raise ValidationFailed(
            f"Parameter 'channel': this scan has no sequence {role!r}; it has {', '.join(roles)}.",
            code="bad_channel",
        )
    return _read(channel.image)


def operation_run(*, scan: Scan, operation: str, raw: bytes, params, locked: list[int]) -> tuple[np.ndarray, ...]:
    """Decode the labels, run one operation; (labels before, labels after)."""
    schema = selectors.label_values(project=scan.project)
    spacing = tuple(float(s) for s in scan.spacing)
    outside = None
    if operation == "grow" and (text := params("outside", required=False)) is not None:
        outside = _integers(text, name="outside", count=1)[0]
        if not 1 <= outside <= 255 or outside in schema:
            raise ValidationFailed(
                f"Parameter 'outside': a value 1..255 that no label of this project uses, got {text!r}.",
                code="bad_outside",
            )
    labels = volumes.load_label_map(
        raw,
        reference_shape=tuple(scan.shape),
        reference_affine=scan.affine,
        allowed_values=[*schema, outside] if outside is not None else schema,
        max_decompressed_bytes=settings.MRIANNOT_MAX_DECOMPRESSED_BYTES,
    )
    if operation == "islands":
        mode = params("mode")
        return labels, editing.islands(
            labels,
            spacing=spacing,
            label=_label(params("label"), schema, allow_all=True),
            mode=mode,
            min_mm3=_number(params("min_mm3"), name="min_mm3") if mode == "remove_small" else None,
            point=_integers(params("point"), name="point", count=3) if mode == "keep_at" else None,
            locked=locked,
        )
    if operation in ("margin", "smooth"):
        kernel = editing.margin if operation == "margin" else editing.smooth
        label = _label(params("label"), schema)
        return labels, kernel(labels, spacing=spacing, label=label, mm=_number(params("mm"), name="mm"), locked=locked)
    if operation == "interpolate":
        label = _label(params("label"), schema)
        axis = _integers(params("axis"), name="axis", count=1)[0]
        return labels, editing.interpolate(labels, spacing=spacing, label=label, axis=axis, locked=locked)
    roi = params("roi", required=False)
    ranges = None
    if roi is not None:
        bounds = _integers(roi, name="roi", count=6)
        ranges = list(zip(bounds[0::2], bounds[1::2], strict=True))
    image = _channel_image(scan, params("channel", required=False))
    return labels, editing.grow_from_seeds(labels, image, spacing=spacing, roi=ranges, locked=locked, outside=outside)


class AssignmentOperationApi(APIView):
    """Run one editing operation on the labels in the body; answer the resulting labels (nothing saved).

    Operations: ``islands`` (label=V|all, mode=remove_small&min_mm3=X | keep_largest |
    keep_at&point=i,j,k), ``margin`` (label, mm: + grows, - shrinks), ``smooth`` (label, mm:
    Gaussian sigma), ``interpolate`` (label, axis=0|1|2: fill between drawn slices), ``grow``
    (seed strokes of two or more labels; channel, roi=i0,i1,j0,j1,k0,k1 half-open, outside=V a
    scratch value that comes back as background). Every operation takes ``locked=1,3``: labels
    it never changes.
    """

    parser_classes = NIFTI_PARSERS

    @extend_schema(
        parameters=[
            OpenApiParameter("operation", str, OpenApiParameter.PATH, enum=list(OPERATION_PARAMETERS)),
            OpenApiParameter("locked", str, required=False, description="label values never changed, e.g. 1,3"),
            OpenApiParameter("label", str, required=False, description="a label value (islands: or 'all')"),
            OpenApiParameter("mode", str, required=False, enum=list(editing.ISLAND_MODES)),
            OpenApiParameter("min_mm3", float, required=False, description="islands: smallest island kept, mm³"),
            OpenApiParameter("point", str, required=False, description="islands keep_at: voxel i,j,k"),
            OpenApiParameter("mm", float, required=False, description="margin: + grow, - shrink; smooth: sigma"),
            OpenApiParameter("axis", int, required=False, enum=[0, 1, 2], description="interpolate: slice axis"),
            OpenApiParameter("channel", str, required=False, description="grow: the sequence (default the scan's)"),
            OpenApiParameter("roi", str, required=False, description="grow: i0,i1,j0,j1,k0,k1, ends excluded"),
            OpenApiParameter("outside", int, required=False, description="grow: scratch value, back as background"),
        ],
        request={"application/octet-stream": OpenApiTypes.BINARY, "application/gzip": OpenApiTypes.BINARY},
        responses={
            (200, "application/gzip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="the labels after the operation; X-Changed-Voxels, X-Operation-Ms"
            )
        },
    )
    def post(self, request, assignment_id: int, operation: str):
        started = time.perf_counter()
        assignment = _editable_assignment(request, assignment_id)
        if operation not in OPERATION_PARAMETERS:
            raise NotFound(
                f"No operation {operation[:40]!r}; use one of {', '.join(OPERATION_PARAMETERS)}.",
                code="unknown_operation",
            )
        _check_parameters(request, operation)
        locked = _locked(request)
        scan = assignment.scan
        before, after = operation_run(
            scan=scan,
            operation=operation,
            raw=_body(request),
            params=lambda name, required=True: _param(request, name, required=required),
            locked=locked,
        )
        data = volumes.label_map_to_bytes(after, np.asarray(scan.affine, dtype=np.float64))
        response = HttpResponse(data, content_type="application/gzip")
        response["X-Changed-Voxels"] = str(editing.changed_voxels(before, after))
        response["X-Operation-Ms"] = str(round((time.perf_counter() - started) * 1000))
        response["Cache-Control"] = "no-store"
        return response
