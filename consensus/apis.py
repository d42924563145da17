"""HTTP API of consensus: runs of a scan, run detail with rater performance, result files,
flagged scans. Only leads and admins of the project (and site admins) see any of it."""

from __future__ import annotations

import csv
import io

import numpy as np
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import volumes
from labeling.apis import (
    LabelClassOutput,
    ScanOutput,
    get_visible_project,
    nifti_response,
    require_manager,
)
from labeling.parsers import NIFTI_PARSERS
from labeling.selectors import scan_list
from mriannot.errors import NotFound, ValidationFailed
from mriannot.fields import TEXT_MAX_CHARS, IdField, json_validator, query_id
from mriannot.paging import page_parameters, paged_response, paginate
from mriannot.schema import id_parameter, name_nested_serializers

from . import selectors, services
from .models import (
    ConsensusRun,
    Export,
    ExportFormat,
    GroundTruth,
    Method,
    RaterPerformance,
)


class PerformanceOutput(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")

    class Meta:
        model = RaterPerformance
        fields = ["rater_index", "annotator", "revision", "sensitivity", "specificity", "dice", "confusion"]


class RunOutput(serializers.ModelSerializer):
    class Meta:
        model = ConsensusRun
        fields = [
            "id",
            "scan",
            "method",
            "options",
            "kernel_report",
            "revision_ids",
            "status",
            "progress",
            "message",
            "error",
            "attempts",
            "code_version",
            "created_at",
            "started_at",
            "finished_at",
            "timings",
            "label_values",
            "iterations",
            "converged",
            "ambiguity",
            "ambiguity_details",
            "flagged",
            "flag_reasons",
        ]


class RunDetailOutput(RunOutput):
    performances = PerformanceOutput(many=True, read_only=True)

    class Meta(RunOutput.Meta):
        fields = [*RunOutput.Meta.fields, "performances", "agreement"]


def _managed_scan(request, scan_id: int):
    scan = get_object_or_404(scan_list(user=request.user), pk=scan_id)
    require_manager(request, scan.project)
    return scan


class ScanRunListApi(APIView):
    class InputSerializer(serializers.Serializer):
        method = serializers.ChoiceField(choices=Method.choices, default=Method.STAPLE)
        options = serializers.DictField(
            required=False,
            default=dict,
            validators=[json_validator()],
            help_text="kernel options; defaults otherwise",
        )

    @extend_schema(responses=RunOutput(many=True))
    def get(self, request, scan_id: int):
        scan = _managed_scan(request, scan_id)
        return Response(RunOutput(scan.consensus_runs.all(), many=True).data)

    @extend_schema(request=InputSerializer, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, scan_id: int):
        scan = _managed_scan(request, scan_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run, queued = services.consensus_run_request(scan=scan, actor=request.user, **data.validated_data)
        return Response({"id": run.pk, "status": run.status, "reused": not queued}, status=status.HTTP_202_ACCEPTED)


class RunDetailApi(APIView):
    @extend_schema(responses=RunDetailOutput)
    def get(self, request, run_id: int):
        run = get_object_or_404(
            selectors.run_list(user=request.user).prefetch_related("performances__annotator"), pk=run_id
        )
        return Response(RunDetailOutput(run).data)


class RunFileApi(APIView):
    kind = "labels"

    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request, run_id: int):
        run = get_object_or_404(selectors.run_list(user=request.user), pk=run_id)
        field = run.labels_file if self.kind == "labels" else run.posterior_file
        if not field:
            raise NotFound(
                f"Run {run.pk} has no {self.kind} yet (status: {run.status}); poll the run until it is done."
            )
        return nifti_response(field, f"consensus-{run.pk}-{self.kind}.nii.gz")


class RunUncertaintyApi(APIView):
    """1 - max posterior per voxel (float32 NIfTI): the uncertainty overlay of a run."""

    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request, run_id: int):
        run = get_object_or_404(selectors.run_list(user=request.user), pk=run_id)
        if not run.posterior_file:
            raise NotFound(f"Run {run.pk} has no posterior yet (status: {run.status}); poll the run until it is done.")
        with run.posterior_file.open("rb") as handle:
            posterior, affine = volumes.read_array(handle.read())
        uncertainty = 1.0 - np.asarray(posterior, dtype=np.float32).max(axis=-1)
        response = HttpResponse(volumes.image_to_bytes(uncertainty, affine), content_type="application/gzip")
        response["Content-Disposition"] = f'inline; filename="consensus-{run.pk}-uncertainty.nii.gz"'
        return response


class FlaggedScanOutput(ScanOutput):
    """A flagged scan with its newest finished run (the rows are built in the view)."""

    run = serializers.IntegerField(allow_null=True)
    ambiguity = serializers.FloatField(allow_null=True)
    flag_reasons = serializers.ListField(child=serializers.DictField())

    class Meta(ScanOutput.Meta):
        fields = [*ScanOutput.Meta.fields, "run", "ambiguity", "flag_reasons"]


class FlaggedScanListApi(APIView):
    """The adjudication queue: flagged scans, most ambiguous first, paged."""

    @extend_schema(parameters=page_parameters("flagged scans"), responses=FlaggedScanOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        page = paginate(request, selectors.flagged_scan_queue(project=project))
        rows = selectors.flagged_scan_runs(scans=page.items)
        # One serializer for the page: building a ModelSerializer's fields costs ~10 ms a time.
        scans = ScanOutput([scan for scan, _run in rows], many=True).data
        return paged_response(
            request,
            [
                {
                    **scan,
                    "run": run.pk if run else None,
                    "ambiguity": run.ambiguity if run else None,
                    "flag_reasons": run.flag_reasons if run else [],
                }
                for scan, (_scan, run) in zip(scans, rows, strict=True)
            ],
            page,
        )


AGREEMENT_TABLES = ("scans", "pairs", "per_label", "per_rater", "rater_matrix", "over_time", "by_metadata")
#: The tables that grow with the project: streamed from the database, row by row.
AGREEMENT_STREAMED = {"scans": selectors.AGREEMENT_SCAN_FIELDS, "pairs": selectors.AGREEMENT_PAIR_FIELDS}


class ProjectAgreementApi(APIView):
    """Inter-rater agreement of a project (leads and admins): the aggregates, with the least
    agreed scans (``scans_shown`` of ``totals.scans``). ``?table=<name>`` gives one table whole as
    CSV (``scans`` and ``pairs`` streamed)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("table", str, required=False, enum=list(AGREEMENT_TABLES), description="download as CSV"),
        ],
        responses={200: OpenApiTypes.OBJECT, (200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        table = request.query_params.get("table")
        if table is None:
            return Response(selectors.project_agreement(project=project))
        if table not in AGREEMENT_TABLES:
            raise ValidationFailed(
                f"Unknown table {table!r}; download one of: {', '.join(AGREEMENT_TABLES)} (?table=<name>).",
                code="unknown_table",
            )
        filename = f"project-{project.pk}-{table}.csv"
        if table in AGREEMENT_STREAMED:
            rows = selectors.agreement_table_rows(project=project, table=table)
            return csv_stream_response(rows, AGREEMENT_STREAMED[table], filename)
        return csv_response(selectors.project_agreement(project=project)[table], filename)


def csv_response(rows: list[dict], filename: str) -> HttpResponse:
    buffer = io.StringIO()
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    writer = csv.DictWriter(buffer, fieldnames=fields or ["empty"])
    writer.writeheader()
    writer.writerows(rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def csv_stream_response(rows, fields, filename: str) -> StreamingHttpResponse:
    """CSV of an iterator of dicts with these fields, written as it is read (a few thousand rows a chunk)."""

    def chunks():
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(fields))
        writer.writeheader()
        for i, row in enumerate(rows, 1):
            writer.writerow(row)
            if i % 2000 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    response = StreamingHttpResponse(chunks(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class GroundTruthOutput(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)

    class Meta:
        model = GroundTruth
        fields = [
            "id",
            "scan",
            "run",
            "source",
            "supersedes",
            "sha256",
            "label_counts",
            "note",
            "created_by",
            "created_at",
        ]


class GroundTruthListApi(APIView):
    """A scan's ground truths, newest (current) first; POST accepts a finished consensus run."""

    class InputSerializer(serializers.Serializer):
        run = IdField()
        note = serializers.CharField(max_length=TEXT_MAX_CHARS, required=False, allow_blank=True, default="")

    @extend_schema(responses=GroundTruthOutput(many=True))
    def get(self, request, scan_id: int):
        scan = _managed_scan(request, scan_id)
        return Response(GroundTruthOutput(scan.ground_truths.order_by("-id"), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: GroundTruthOutput})
    def post(self, request, scan_id: int):
        scan = _managed_scan(request, scan_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = get_object_or_404(ConsensusRun, pk=data.validated_data["run"], scan=scan)
        truth = services.ground_truth_accept(run=run, actor=request.user, note=data.validated_data["note"])
        return Response(GroundTruthOutput(truth).data, status=status.HTTP_201_CREATED)


class GroundTruthEditApi(APIView):
    """Save a lead's edited label map (NIfTI bytes as the body) as the scan's ground truth."""

    parser_classes = NIFTI_PARSERS

    class QuerySerializer(serializers.Serializer):
        note = serializers.CharField(
            max_length=TEXT_MAX_CHARS, required=False, allow_blank=True, trim_whitespace=False, default=""
        )

    @extend_schema(
        parameters=[
            id_parameter("run", "the consensus run the edit started from"),
            OpenApiParameter("note", {"type": "string", "maxLength": TEXT_MAX_CHARS}, required=False),
        ],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={201: GroundTruthOutput},
    )
    def post(self, request, scan_id: int):
        scan = _managed_scan(request, scan_id)
        run = None
        if request.query_params.get("run"):
            run = get_object_or_404(ConsensusRun, pk=query_id(request, "run"), scan=scan)
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        note = query.validated_data["note"]
        raw = request.data if isinstance(request.data, bytes) else b""
        truth = services.ground_truth_edit(scan=scan, actor=request.user, raw=raw, run=run, note=note)
        return Response(GroundTruthOutput(truth).data, status=status.HTTP_201_CREATED)


class GroundTruthLabelsApi(APIView):
    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request, truth_id: int):
        truth = get_object_or_404(
            GroundTruth.objects.filter(scan__in=scan_list(user=request.user)).select_related("scan__project"),
            pk=truth_id,
        )
        require_manager(request, truth.scan.project)
        return nifti_response(truth.file, f"ground-truth-{truth.pk}.nii.gz")


class ScanReviewApi(APIView):
    """Everything a lead needs to review a scan: runs, the latest run's performance and
    agreement, each rater's submitted revision, and the current ground truth."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, scan_id: int):
        scan = _managed_scan(request, scan_id)
        latest = selectors.latest_done_run(scan=scan)
        truth = services.current_ground_truth(scan=scan)
        raters = [
            {"rater_index": i, "revision": revision.pk, "annotator": revision.created_by.username}
            for i, revision in enumerate(services.submitted_revisions(scan=scan))
        ]
        return Response(
            {
                "scan": ScanOutput(scan).data,
                "labels": LabelClassOutput(scan.project.label_classes.all(), many=True).data,
                "runs": RunOutput(scan.consensus_runs.all(), many=True).data,
                "latest_run": RunDetailOutput(latest).data if latest else None,
                "raters": raters,
                "ground_truth": GroundTruthOutput(truth).data if truth else None,
                "flagged_scans": list(selectors.flagged_scan_queue(project=scan.project).values_list("pk", flat=True)),
            }
        )


class ExportOutput(serializers.ModelSerializer):
    class Meta:
        model = Export
        fields = [
            "id",
            "project",
            "format",
            "options",
            "status",
            "progress",
            "message",
            "error",
            "sha256",
            "size",
            "summary",
            "requested_by",
            "created_at",
            "finished_at",
        ]

    requested_by = serializers.CharField(source="requested_by.username", default=None, allow_null=True)
    summary = serializers.SerializerMethodField()

    def get_summary(self, export: Export) -> dict:
        # pseudonym -> scan id stays on the server's side of the API: it re-identifies cases
        return {k: v for k, v in export.summary.items() if k != "pseudonyms"}


class ExportListApi(APIView):
    class InputSerializer(serializers.Serializer):
        format = serializers.ChoiceField(choices=ExportFormat.choices)
        include_raters = serializers.BooleanField(default=False)
        include_posterior = serializers.BooleanField(default=False)
        only_adjudicated = serializers.BooleanField(default=False)
        dataset_id = serializers.IntegerField(min_value=1, max_value=999, default=500, help_text="nnU-Net DatasetXXX")

    @extend_schema(parameters=page_parameters("exports"), responses=ExportOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        page = paginate(request, project.exports.select_related("requested_by"))
        return paged_response(request, ExportOutput(page.items, many=True).data, page)

    @extend_schema(request=InputSerializer, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        export = services.export_request(project=project, actor=request.user, **data.validated_data)
        return Response({"id": export.pk, "status": export.status}, status=status.HTTP_202_ACCEPTED)


def _managed_export(request, export_id: int) -> Export:
    export = get_object_or_404(Export.objects.select_related("project"), pk=export_id)
    get_visible_project(request, export.project_id)  # 404 for projects the user cannot see
    require_manager(request, export.project)
    return export


class ExportDetailApi(APIView):
    @extend_schema(responses=ExportOutput)
    def get(self, request, export_id: int):
        return Response(ExportOutput(_managed_export(request, export_id)).data)


class ExportDownloadApi(APIView):
    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request, export_id: int):
        export = _managed_export(request, export_id)
        if not export.file:
            raise NotFound(f"Export {export.pk} is {export.status}; download it when it is done.")
        handle = default_storage.open(export.file.name, "rb")
        return FileResponse(
            handle,
            content_type="application/zip",
            as_attachment=True,
            filename=f"mriannot-export-{export.pk}-{export.format}.zip",
        )


name_nested_serializers(globals())
