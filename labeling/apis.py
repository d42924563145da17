"""HTTP API of labeling: validate, call one service, serialize.

Objects a user may not see answer 404 (they are filtered out by :mod:`labeling.selectors`);
actions on visible objects that the user's role does not allow answer 403.
"""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model, login, logout, user_logged_in
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import FileResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from mriannot.errors import LockedOut, NotAllowed, ValidationFailed
from mriannot.fields import TEXT_MAX_CHARS, FiniteFloatField, IdField, query_id
from mriannot.schema import id_parameter, name_nested_serializers

from . import auth_services, selectors, services
from .authentication import ApiTokenAuthentication, enforce_csrf, lockout_message
from .models import (
    ALStrategy,
    AnnotationRevision,
    ApiToken,
    Assignment,
    AuditEvent,
    LabelClass,
    Membership,
    Project,
    RevisionSource,
    Role,
    Scan,
    Split,
)
from .parsers import NIFTI_PARSERS, NiftiParser, upload_bytes

User = get_user_model()


# --- shared helpers ----------------------------------------------------------------------------


def get_visible_project(request, project_id: int) -> Project:
    return get_object_or_404(selectors.project_list(user=request.user), pk=project_id)


def require_manager(request, project: Project) -> None:
    if not selectors.user_manages_project(user=request.user, project=project):
        raise NotAllowed("Only a lead or admin of this project can do this.")


def nifti_response(file_field, filename: str) -> FileResponse:
    handle = default_storage.open(file_field.name, "rb")
    response = FileResponse(handle, content_type="application/gzip", as_attachment=False, filename=filename)
    response["Cache-Control"] = "private, max-age=0"
    return response


class LabelClassOutput(serializers.ModelSerializer):
    class Meta:
        model = LabelClass
        fields = ["id", "value", "name", "color"]


class LabelClassInput(serializers.Serializer):
    value = serializers.IntegerField(min_value=1, max_value=255)
    name = serializers.CharField(max_length=100)
    color = serializers.RegexField(r"^#[0-9a-fA-F]{6}$", error_messages={"invalid": "Use a colour like #ff8800."})


class ProjectOutput(serializers.ModelSerializer):
    labels = LabelClassOutput(source="label_classes", many=True, read_only=True)
    my_role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "description",
            "raters_per_scan",
            "ambiguity_threshold",
            "flag_min_label_dice",
            "flag_max_volume_spread",
            "flag_max_rater_gap",
            "al_strategy",
            "al_retrain_every",
            "al_offer_prelabels",
            "priority_note",
            "is_simulated",
            "labels",
            "my_role",
            "created_at",
        ]

    def get_my_role(self, project: Project) -> str | None:
        return selectors.project_role(user=self.context["request"].user, project=project)


class ScanOutput(serializers.ModelSerializer):
    class Meta:
        model = Scan
        fields = [
            "id",
            "project",
            "sha256",
            "original_filename",
            "shape",
            "spacing",
            "affine",
            "orientation",
            "subject_id",
            "session_id",
            "split",
            "status",
            "created_at",
        ]


class AssignmentOutput(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")
    project = serializers.IntegerField(source="scan.project_id")
    head_revision = serializers.SerializerMethodField()

    class Meta:
        model = Assignment
        fields = [
            "id",
            "scan",
            "project",
            "annotator",
            "status",
            "priority",
            "head_revision",
            "created_at",
            "submitted_at",
        ]

    def get_head_revision(self, assignment: Assignment) -> int | None:
        head = selectors.assignment_head(assignment=assignment)
        return head.pk if head else None


class RevisionOutput(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username")

    class Meta:
        model = AnnotationRevision
        fields = ["id", "assignment", "number", "base", "sha256", "label_counts", "source", "created_by", "created_at"]


# --- authentication ----------------------------------------------------------------------------


def password_user(request, *, username: str, password: str):
    """The user these credentials name, or a refusal: 400 ``bad_credentials``, or 429 ``locked_out``
    after too many failures for this username from this address (django-axes counts them)."""
    user = authenticate(request, username=username, password=password)
    if user is not None:
        return user
    if getattr(request, "axes_locked_out", False):
        message, retry_after = lockout_message(username=username, ip_address=getattr(request, "axes_ip_address", None))
        raise LockedOut(message, retry_after_s=retry_after)
    raise ValidationFailed("Unknown username or wrong password.", code="bad_credentials")


class LoginApi(APIView):
    """Session log-in for the browser (sets the session and CSRF cookies).

    The POST needs the CSRF token like every browser POST (cookie + ``X-CSRFToken`` header), so
    another site cannot log a browser in to an account of its choosing. GET gives the cookie and
    the token. Too many failed attempts lock the username out from that address for a while (429).
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, style={"input_type": "password"})

    @method_decorator(ensure_csrf_cookie)
    @extend_schema(responses={200: inline_serializer("CsrfOutput", {"csrf_token": serializers.CharField()})})
    def get(self, request):
        return Response({"csrf_token": get_token(request)})

    @method_decorator(ensure_csrf_cookie)
    @extend_schema(request=InputSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        enforce_csrf(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = password_user(request, **data.validated_data)
        login(request, user)
        return Response(MeApi.payload(user))


class LogoutApi(APIView):
    """End the session; logging out also revokes every API token of the user."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        logout(request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiTokenOutput(serializers.ModelSerializer):
    expired = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "expired"]

    def get_expired(self, token: ApiToken) -> bool:
        return token.expires_at <= timezone.now()


class NewApiTokenOutput(ApiTokenOutput):
    token = serializers.SerializerMethodField(help_text="The key: shown this once, never again.")

    class Meta(ApiTokenOutput.Meta):
        fields = ["token", *ApiTokenOutput.Meta.fields]

    def get_token(self, token: ApiToken) -> str:
        return self.context["key"]


class TokenApi(APIView):
    """A new token for scripts: send it as ``Authorization: Token <key>``.

    The key is shown once; it expires after ``MRIANNOT_API_TOKEN_TTL_DAYS`` days, and logging out
    or changing the password revokes it. Failed attempts count towards the log-in lockout.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    class InputSerializer(LoginApi.InputSerializer):
        name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={200: NewApiTokenOutput})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        credentials = data.validated_data
        user = password_user(request, username=credentials["username"], password=credentials["password"])
        user_logged_in.send(sender=user.__class__, request=request, user=user)
        token, key = auth_services.api_token_create(user=user, name=credentials["name"])
        return Response(NewApiTokenOutput(token, context={"key": key}).data)


class MyTokenListApi(APIView):
    """My API tokens (GET), and a new named one (POST, from a password log-in: a token cannot make tokens)."""

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    @extend_schema(responses=ApiTokenOutput(many=True))
    def get(self, request):
        return Response(ApiTokenOutput(selectors.api_token_list(user=request.user), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: NewApiTokenOutput})
    def post(self, request):
        if isinstance(request.successful_authenticator, ApiTokenAuthentication):
            raise NotAllowed(
                "A token cannot make tokens. Log in with your password (the browser), "
                "or POST /api/v1/auth/token/ with your username and password."
            )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, key = auth_services.api_token_create(user=request.user, name=data.validated_data["name"], via="session")
        return Response(NewApiTokenOutput(token, context={"key": key}).data, status=status.HTTP_201_CREATED)


class MyTokenDetailApi(APIView):
    """Revoke one of my tokens (another user's token is not found)."""

    @extend_schema(responses={204: None})
    def delete(self, request, token_id: int):
        token = get_object_or_404(selectors.api_token_list(user=request.user).select_related("user"), pk=token_id)
        auth_services.api_token_revoke(token=token, actor=request.user, reason="revoked by its owner")
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    @staticmethod
    def payload(user) -> dict:
        return {
            "id": user.pk,
            "username": user.username,
            "is_site_admin": selectors.user_is_site_admin(user),
            "memberships": [
                {"project": m.project_id, "project_name": m.project.name, "role": m.role}
                for m in Membership.objects.filter(user=user).select_related("project")
            ],
        }

    @method_decorator(ensure_csrf_cookie)
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response(self.payload(request.user))


# --- projects, members, labels -----------------------------------------------------------------


class ProjectListApi(APIView):
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(max_length=TEXT_MAX_CHARS, required=False, allow_blank=True, default="")
        raters_per_scan = serializers.IntegerField(min_value=1, max_value=20, default=3)
        ambiguity_threshold = FiniteFloatField(min_value=0.0, max_value=1.0, default=0.05)
        flag_min_label_dice = FiniteFloatField(min_value=0.0, max_value=1.0, allow_null=True, default=0.5)
        flag_max_volume_spread = FiniteFloatField(min_value=0.0, allow_null=True, default=0.5)
        flag_max_rater_gap = FiniteFloatField(min_value=0.0, max_value=1.0, allow_null=True, default=0.25)
        al_strategy = serializers.ChoiceField(choices=ALStrategy.choices, default=ALStrategy.ENTROPY)
        labels = LabelClassInput(many=True, required=False, default=list)

    @extend_schema(responses=ProjectOutput(many=True))
    def get(self, request):
        projects = selectors.project_list(user=request.user).prefetch_related("label_classes")
        return Response(ProjectOutput(projects, many=True, context={"request": request}).data)

    @extend_schema(request=InputSerializer, responses={201: ProjectOutput})
    def post(self, request):
        user = request.user
        if not (
            selectors.user_is_site_admin(user)
            or Membership.objects.filter(user=user, role__in=(Role.LEAD, Role.ADMIN)).exists()
        ):
            raise NotAllowed("Only site admins and project leads can create projects.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_create(actor=user, **data.validated_data)
        return Response(ProjectOutput(project, context={"request": request}).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200, required=False)
        description = serializers.CharField(max_length=TEXT_MAX_CHARS, required=False, allow_blank=True)
        raters_per_scan = serializers.IntegerField(min_value=1, max_value=20, required=False)
        ambiguity_threshold = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
        flag_min_label_dice = FiniteFloatField(min_value=0.0, max_value=1.0, allow_null=True, required=False)
        flag_max_volume_spread = FiniteFloatField(min_value=0.0, allow_null=True, required=False)
        flag_max_rater_gap = FiniteFloatField(min_value=0.0, max_value=1.0, allow_null=True, required=False)
        al_strategy = serializers.ChoiceField(choices=ALStrategy.choices, required=False)
        al_retrain_every = serializers.IntegerField(min_value=1, max_value=1000, required=False)
        al_offer_prelabels = serializers.BooleanField(required=False)

    @extend_schema(responses=ProjectOutput)
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        return Response(ProjectOutput(project, context={"request": request}).data)

    @extend_schema(request=InputSerializer, responses=ProjectOutput)
    def patch(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        data = self.InputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = services.project_update(project=project, actor=request.user, **data.validated_data)
        return Response(ProjectOutput(project, context={"request": request}).data)


class MemberOutput(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    user_id = serializers.IntegerField(source="user.id")

    class Meta:
        model = Membership
        fields = ["id", "user_id", "username", "role", "created_at"]


class MemberListApi(APIView):
    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        role = serializers.ChoiceField(choices=Role.choices)

    @extend_schema(responses=MemberOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        members = Membership.objects.filter(project=project).select_related("user")
        return Response(MemberOutput(members, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: MemberOutput})
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = User.objects.filter(username=data.validated_data["username"]).first()
        if user is None:
            raise ValidationFailed(
                f"No user named {data.validated_data['username']!r}; an admin must create the account first.",
                code="unknown_user",
            )
        membership = services.membership_set(
            project=project, actor=request.user, user=user, role=data.validated_data["role"]
        )
        return Response(MemberOutput(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        role = serializers.ChoiceField(choices=Role.choices)

    def _get(self, request, project_id: int, member_id: int) -> Membership:
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        return get_object_or_404(Membership.objects.select_related("user", "project"), project=project, pk=member_id)

    @extend_schema(request=InputSerializer, responses=MemberOutput)
    def patch(self, request, project_id: int, member_id: int):
        membership = self._get(request, project_id, member_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_set(
            project=membership.project, actor=request.user, user=membership.user, role=data.validated_data["role"]
        )
        return Response(MemberOutput(membership).data)

    @extend_schema(responses={204: None})
    def delete(self, request, project_id: int, member_id: int):
        membership = self._get(request, project_id, member_id)
        services.membership_remove(membership=membership, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LabelClassListApi(APIView):
    @extend_schema(responses=LabelClassOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        return Response(LabelClassOutput(project.label_classes.all(), many=True).data)

    @extend_schema(request=LabelClassInput, responses={201: LabelClassOutput})
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        data = LabelClassInput(data=request.data)
        data.is_valid(raise_exception=True)
        label = services.label_class_create(project=project, actor=request.user, **data.validated_data)
        return Response(LabelClassOutput(label).data, status=status.HTTP_201_CREATED)


class LabelClassDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100, required=False)
        color = serializers.RegexField(r"^#[0-9a-fA-F]{6}$", required=False)

    def _get(self, request, project_id: int, label_id: int) -> LabelClass:
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        return get_object_or_404(LabelClass, project=project, pk=label_id)

    @extend_schema(request=InputSerializer, responses=LabelClassOutput)
    def patch(self, request, project_id: int, label_id: int):
        label = self._get(request, project_id, label_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        label = services.label_class_update(label=label, actor=request.user, **data.validated_data)
        return Response(LabelClassOutput(label).data)

    @extend_schema(responses={204: None})
    def delete(self, request, project_id: int, label_id: int):
        label = self._get(request, project_id, label_id)
        services.label_class_delete(label=label, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- scans ------------------------------------------------------------------------------------


class ScanListApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="NIfTI image, .nii or .nii.gz")
        subject_id = serializers.RegexField(r"^[A-Za-z0-9_-]{0,64}$", required=False, default="")
        session_id = serializers.RegexField(r"^[A-Za-z0-9_-]{0,64}$", required=False, default="")
        split = serializers.ChoiceField(choices=Split.choices, default=Split.UNASSIGNED)

    @extend_schema(responses=ScanOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        scans = selectors.scan_list(user=request.user).filter(project=project)
        return Response(ScanOutput(scans, many=True).data)

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: ScanOutput})
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        scan = services.scan_create(
            project=project,
            actor=request.user,
            raw=upload_bytes(upload),
            filename=upload.name,
            subject_id=data.validated_data["subject_id"],
            session_id=data.validated_data["session_id"],
            split=data.validated_data["split"],
        )
        return Response(ScanOutput(scan).data, status=status.HTTP_201_CREATED)


class ScanDetailApi(APIView):
    @extend_schema(responses=ScanOutput)
    def get(self, request, scan_id: int):
        scan = get_object_or_404(selectors.scan_list(user=request.user), pk=scan_id)
        return Response(ScanOutput(scan).data)


class ScanImageApi(APIView):
    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request, scan_id: int):
        scan = get_object_or_404(selectors.scan_list(user=request.user), pk=scan_id)
        return nifti_response(scan.image, f"scan-{scan.pk}.nii.gz")


# --- worklist, assignments, revisions -----------------------------------------------------------


class WorklistApi(APIView):
    """The current user's own assignments, open first, in priority order."""

    @extend_schema(
        parameters=[id_parameter("project")],
        responses=inline_serializer(
            "WorklistItem",
            {
                "assignment": serializers.IntegerField(),
                "scan": serializers.IntegerField(),
                "project": serializers.IntegerField(),
                "project_name": serializers.CharField(),
                "subject_id": serializers.CharField(),
                "status": serializers.CharField(),
                "priority": serializers.FloatField(),
                "revisions": serializers.IntegerField(),
                "priority_note": serializers.CharField(),
            },
            many=True,
        ),
    )
    def get(self, request):
        project = None
        if request.query_params.get("project"):
            project = get_visible_project(request, query_id(request, "project"))
        items = selectors.worklist(user=request.user, project=project)
        return Response(
            [
                {
                    "assignment": a.pk,
                    "scan": a.scan_id,
                    "project": a.scan.project_id,
                    "project_name": a.scan.project.name,
                    "subject_id": a.scan.subject_id,
                    "status": a.status,
                    "priority": a.priority,
                    "revisions": a.revision_count,
                    "priority_note": a.scan.project.priority_note,
                }
                for a in items
            ]
        )


class AssignmentListApi(APIView):
    @extend_schema(
        parameters=[id_parameter("project"), id_parameter("scan")],
        responses=AssignmentOutput(many=True),
    )
    def get(self, request):
        qs = selectors.assignment_list(user=request.user)
        if "project" in request.query_params:
            qs = qs.filter(scan__project_id=query_id(request, "project"))
        if "scan" in request.query_params:
            qs = qs.filter(scan_id=query_id(request, "scan"))
        return Response(AssignmentOutput(qs, many=True).data)


class AssignmentDetailApi(APIView):
    @extend_schema(responses=AssignmentOutput)
    def get(self, request, assignment_id: int):
        assignment = get_object_or_404(selectors.assignment_list(user=request.user), pk=assignment_id)
        return Response(AssignmentOutput(assignment).data)


class RevisionListApi(APIView):
    """List an assignment's revisions, or save a new one (the body is the label volume as NIfTI bytes)."""

    parser_classes = [*NIFTI_PARSERS, MultiPartParser]

    @extend_schema(responses=RevisionOutput(many=True))
    def get(self, request, assignment_id: int):
        assignment = get_object_or_404(selectors.assignment_list(user=request.user), pk=assignment_id)
        revisions = (
            selectors.revision_list(user=request.user).filter(assignment=assignment).select_related("created_by")
        )
        return Response(RevisionOutput(revisions, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "base_revision",
                {"type": "string", "pattern": "^(none|[1-9][0-9]{0,18})$"},
                required=True,
                description="Id of the revision these labels start from, or 'none' for the first save.",
            ),
            OpenApiParameter("source", str, required=False, enum=RevisionSource.values),
        ],
        request={"application/octet-stream": OpenApiTypes.BINARY, "application/gzip": OpenApiTypes.BINARY},
        responses={201: RevisionOutput, 200: RevisionOutput},
    )
    def post(self, request, assignment_id: int):
        assignment = get_object_or_404(selectors.assignment_list(user=request.user), pk=assignment_id)
        base = request.query_params.get("base_revision")
        if base is None:
            raise ValidationFailed(
                "base_revision is required: pass ?base_revision=<id> of the revision your labels start from, "
                "or ?base_revision=none for the first save.",
                code="missing_base_revision",
            )
        if base.lower() in ("none", "null", ""):
            base_id = None
        else:
            base_id = query_id(request, "base_revision")
        raw = request.data
        if not isinstance(raw, bytes):
            upload = raw.get("file") if hasattr(raw, "get") else None
            if upload is None and request.content_type.split(";")[0] in NiftiParser.media_types:
                upload = ContentFile(b"")  # an empty body: the NIfTI door says what is wrong
            if upload is None:
                raise ValidationFailed(
                    "Send the label volume as the request body (Content-Type: application/octet-stream) "
                    "or as a multipart field named 'file'.",
                    code="missing_file",
                )
            raw = upload_bytes(upload)
        revision, created = services.revision_create(
            assignment=assignment,
            actor=request.user,
            raw=raw,
            base_revision_id=base_id,
            source=request.query_params.get("source", RevisionSource.MANUAL),
        )
        return Response(
            RevisionOutput(revision).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class RevisionDetailApi(APIView):
    @extend_schema(responses=RevisionOutput)
    def get(self, request, revision_id: int):
        revision = get_object_or_404(selectors.revision_list(user=request.user), pk=revision_id)
        return Response(RevisionOutput(revision).data)


class RevisionLabelsApi(APIView):
    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request, revision_id: int):
        revision = get_object_or_404(selectors.revision_list(user=request.user), pk=revision_id)
        return nifti_response(revision.file, f"revision-{revision.pk}.nii.gz")


class AssignmentSubmitApi(APIView):
    class InputSerializer(serializers.Serializer):
        revision = IdField(required=False, help_text="The revision you submit; must be the latest.")

    @extend_schema(request=InputSerializer, responses=AssignmentOutput)
    def post(self, request, assignment_id: int):
        assignment = get_object_or_404(selectors.assignment_list(user=request.user), pk=assignment_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = services.assignment_submit(
            assignment=assignment, actor=request.user, revision_id=data.validated_data.get("revision")
        )
        return Response(AssignmentOutput(assignment).data)


class AuditEventOutput(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["id", "actor", "action", "target_type", "target_id", "data", "created_at"]

    def get_actor(self, event: AuditEvent) -> str | None:
        """Who did it, by the username they had then (it outlives the account); None: the system."""
        return event.actor_username or None


class AuditListApi(APIView):
    @extend_schema(responses=AuditEventOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        return Response(AuditEventOutput(selectors.audit_list(project=project)[:500], many=True).data)


name_nested_serializers(globals())
