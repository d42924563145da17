"""HTTP API of consensus: runs of a scan, run detail with rater performance, result files,
flagged scans. Only leads and admins of the project (and site admins) see any of it."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.apis import ScanOutput, get_visible_project, nifti_response, require_manager
from labeling.selectors import scan_list
from mriannot.errors import NotFound
from mriannot.schema import name_nested_serializers

from . import selectors, services
from .models import ConsensusRun, Method, RaterPerformance


class PerformanceOutput(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")

    class Meta:
        model = RaterPerformance
        fields = ["rater_index", "annotator", "revision", "sensitivity", "specificity", "dice", "confusion"]


class RunOutput(serializers.ModelSerializer):
    class Meta:
        model = ConsensusRun
        fields = [
            "id", "scan", "method", "options", "kernel_report", "revision_ids", "status", "progress", "message", "error",
            "attempts", "code_version", "created_at", "started_at", "finished_at", "timings", "label_values",
            "iterations", "converged", "ambiguity", "ambiguity_details", "flagged",
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
        options = serializers.DictField(required=False, default=dict, help_text="kernel options; defaults otherwise")

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
        run = get_object_or_404(selectors.run_list(user=request.user).prefetch_related("performances__annotator"), pk=run_id)
        return Response(RunDetailOutput(run).data)


class RunFileApi(APIView):
    kind = "labels"

    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request, run_id: int):
        run = get_object_or_404(selectors.run_list(user=request.user), pk=run_id)
        field = run.labels_file if self.kind == "labels" else run.posterior_file
        if not field:
            raise NotFound(f"Run {run.pk} has no {self.kind} yet (status: {run.status}); poll the run until it is done.")
        return nifti_response(field, f"consensus-{run.pk}-{self.kind}.nii.gz")


class FlaggedScanListApi(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        rows = []
        for scan in selectors.flagged_scans(project=project):
            run = selectors.latest_done_run(scan=scan)
            rows.append({**ScanOutput(scan).data, "run": run.pk if run else None, "ambiguity": run.ambiguity if run else None})
        rows.sort(key=lambda row: -(row["ambiguity"] or 0))
        return Response(rows)


name_nested_serializers(globals())
