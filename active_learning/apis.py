"""HTTP API of active learning: model versions, ranking, pre-labels, editing effort."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.apis import get_visible_project, nifti_response, require_manager
from labeling.selectors import assignment_list, user_manages_project
from mriannot.errors import NotAllowed, NotFound
from mriannot.paging import page_parameters, paged_response, paginate

from . import selectors, services
from .model_card import card_markdown
from .models import ModelVersion


class ModelVersionOutput(serializers.ModelSerializer):
    channels = serializers.ListField(
        child=serializers.CharField(),
        source="channel_roles",
        read_only=True,
        help_text="the sequences the network reads, in order; empty: the scan's image alone",
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "version",
            "status",
            "progress",
            "message",
            "error",
            "trigger",
            "ground_truth_ids",
            "validation_ground_truth_ids",
            "channels",
            "hyperparameters",
            "validation_dice",
            "validation_dice_per_scan",
            "code_version",
            "created_at",
            "finished_at",
            "scored_at",
        ]


class ModelVersionListApi(APIView):
    @extend_schema(parameters=page_parameters("model versions"), responses=ModelVersionOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        page = paginate(request, project.model_versions.all())
        return paged_response(request, ModelVersionOutput(page.items, many=True).data, page)

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        version, queued = services.model_version_request(project=project, actor=request.user)
        return Response(
            {"id": version.pk, "version": version.version, "status": version.status, "reused": not queued},
            status=status.HTTP_202_ACCEPTED,
        )


class ModelVersionDetailOutput(ModelVersionOutput):
    validation_by_metadata = serializers.SerializerMethodField(
        help_text="validation Dice per label by scan metadata column and group, with n (scans) per group"
    )

    class Meta(ModelVersionOutput.Meta):
        fields = [*ModelVersionOutput.Meta.fields, "validation_by_metadata"]

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_validation_by_metadata(self, version: ModelVersion) -> list[dict]:
        return selectors.validation_by_metadata(version=version)


class ModelVersionDetailApi(APIView):
    """A model version; with its validation Dice broken down by scan metadata (site, scanner,
    field strength, sequence, sex, age band)."""

    @extend_schema(responses=ModelVersionDetailOutput)
    def get(self, request, version_id: int):
        version = get_object_or_404(ModelVersion.objects.select_related("project"), pk=version_id)
        require_manager(request, get_visible_project(request, version.project_id))
        return Response(ModelVersionDetailOutput(version).data)


class RankingApi(APIView):
    """The open scans in the order annotators will see them, with their scores; ``scans`` is paged
    (``limit``, ``offset``; the total in ``X-Total-Count``, the pages in ``Link``)."""

    @extend_schema(parameters=page_parameters("scans"), responses=OpenApiTypes.OBJECT)
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        model, scans = selectors.ranking_queue(project=project)
        page = paginate(request, scans.select_related("project").prefetch_related("channels"))
        return paged_response(
            request,
            {
                "strategy": project.al_strategy,
                "note": project.priority_note or "Not ranked yet.",
                "model_version": model.version if model else None,
                "scans": selectors.ranking_rows(scans=page.items, model=model),
            },
            page,
        )

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        services.scores_update_request(project=project)
        return Response({"status": "queued"}, status=status.HTTP_202_ACCEPTED)


class PrelabelApi(APIView):
    """The model's pre-label for the annotator's own assignment (a starting drawing)."""

    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request, assignment_id: int):
        assignment = get_object_or_404(
            assignment_list(user=request.user).select_related("scan__project"), pk=assignment_id
        )
        if assignment.annotator_id != request.user.pk and not user_manages_project(
            user=request.user, project=assignment.scan.project
        ):
            raise NotAllowed("Pre-labels are offered to the assigned annotator.")
        score = selectors.prelabel_for(assignment=assignment)
        if score is None:
            raise NotFound(
                "No pre-label for this scan: the project offers none, or no model has scored this scan yet.",
                code="no_prelabel",
            )
        response = nifti_response(
            score.prelabel, f"prelabel-{assignment.scan_id}-v{score.model_version.version}.nii.gz"
        )
        response["X-Model-Version"] = str(score.model_version.version)
        return response


class EditingEffortApi(APIView):
    @extend_schema(
        responses=inline_serializer(
            "EditingEffortRow",
            {
                "assignment": serializers.IntegerField(),
                "scan": serializers.IntegerField(),
                "annotator": serializers.CharField(),
                "model_version": serializers.IntegerField(allow_null=True),
                "dice": serializers.DictField(child=serializers.FloatField(allow_null=True)),
                "mean_dice": serializers.FloatField(allow_null=True),
            },
            many=True,
        )
    )
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        return Response(selectors.editing_effort_list(project=project))


def _card_version(request, version_id: int) -> ModelVersion:
    version = get_object_or_404(ModelVersion.objects.select_related("project"), pk=version_id)
    require_manager(request, get_visible_project(request, version.project_id))
    return version


class ModelCardApi(APIView):
    """The version's model card (JSON): ground truths with hashes and split, recipe, code version,
    validation Dice per label and by metadata group, calibration, intended use, known limits."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, version_id: int):
        return Response(selectors.model_card(version=_card_version(request, version_id)))


class ModelCardMarkdownApi(APIView):
    """The same model card as Markdown (``text/markdown``)."""

    @extend_schema(responses={(200, "text/markdown"): OpenApiTypes.STR})
    def get(self, request, version_id: int):
        version = _card_version(request, version_id)
        text = card_markdown(selectors.model_card(version=version))
        response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = f'inline; filename="model-card-v{version.version}.md"'
        return response
