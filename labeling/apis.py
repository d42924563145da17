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
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from mriannot.errors import LockedOut, NotAllowed, TooLarge, ValidationFailed
from mriannot.fields import TEXT_MAX_CHARS, FiniteFloatField, IdField, query_id
from mriannot.paging import page_parameters, paged_response, paginate
from mriannot.schema import id_parameter, name_nested_serializers

from . import auth_services, dicom_imports, selectors, services, splits
from . import metadata as scan_metadata
from .authentication import ApiTokenAuthentication, enforce_csrf, lockout_message
from .models import (
    ALStrategy,
    AnnotationRevision,
    ApiToken,
    Assignment,
    AssignmentStatus,
    AuditEvent,
    Comment,
    DicomImport,
    LabelClass,
    Membership,
    PrelabelPolicy,
    Project,
    RevisionSource,
    Role,
    Scan,
    ScanStatus,
    Split,
)
from .parsers import NIFTI_PARSERS, NiftiParser, upload_bytes, upload_bytes_check

User = get_user_model()

#: The scan metadata columns (labeling/metadata.py), as every scan answer carries them.
SCAN_METADATA_COLUMNS = scan_metadata.COLUMNS


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
        fields = ["id", "value", "name", "color", "key"]


class LabelClassInput(serializers.Serializer):
    value = serializers.IntegerField(min_value=1, max_value=255)
    name = serializers.CharField(max_length=100)
    color = serializers.RegexField(r"^#[0-9a-fA-F]{6}$", error_messages={"invalid": "Use a colour like #ff8800."})
    key = serializers.IntegerField(
        min_value=1,
        max_value=9,
        required=False,
        allow_null=True,
        default=None,
        help_text="number key; empty: the next free",
    )


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
            "prelabel_policy",
            "channels",
            "priority_note",
            "is_simulated",
            "labels",
            "my_role",
            "created_at",
        ]

    def get_my_role(self, project: Project) -> str | None:
        return selectors.project_role(user=self.context["request"].user, project=project)


class ProjectListOutput(ProjectOutput):
    """A project as the projects page lists it: with the user's progress in it
    (:func:`labeling.selectors.project_progress`, passed in the context as ``progress``)."""

    progress = serializers.SerializerMethodField()

    class Meta(ProjectOutput.Meta):
        fields = [*ProjectOutput.Meta.fields, "progress"]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_progress(self, project: Project) -> dict | None:
        return self.context.get("progress", {}).get(project.pk)


class ScanOutput(serializers.ModelSerializer):
    status = serializers.CharField(
        read_only=True,
        help_text=f"for the project's leads, the scan's state ({', '.join(ScanStatus.values)}); for a rater, "
        f"their own assignment's status ({', '.join(AssignmentStatus.values)}): never how the consensus came out",
    )

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
            *SCAN_METADATA_COLUMNS,
            "created_at",
        ]


class RaterScanOutput(ScanOutput):
    """A scan as one of its raters sees it: ``status`` is their own assignment's status, never the
    scan's (``flagged``, ``consensus``, ``ground_truth`` tell how the raters compared: blinding).
    Without the uploaded file's name, which may name the patient and is for the project's leads."""

    status = serializers.SerializerMethodField(help_text="your assignment's status: todo, in_progress, ...")

    class Meta(ScanOutput.Meta):
        fields = [name for name in ScanOutput.Meta.fields if name != "original_filename"]

    def get_status(self, scan: Scan) -> str | None:
        return self.context["statuses"].get(scan.pk)


def scan_payload(request, scans: list[Scan], *, project: Project) -> list[dict]:
    """Scans of one project as this user may see them: in full for its leads, blinded for raters."""
    if selectors.user_manages_project(user=request.user, project=project):
        return ScanOutput(scans, many=True).data
    statuses = selectors.rater_scan_status(user=request.user, scans=scans)
    return RaterScanOutput(scans, many=True, context={"statuses": statuses}).data


class ReturnCommentOutput(serializers.Serializer):
    """Why a lead sent the submission back (the latest such comment), while it is back."""

    id = serializers.IntegerField()
    text = serializers.CharField()
    author = serializers.CharField(source="author_username")
    created_at = serializers.DateTimeField()


class AssignmentOutput(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")
    project = serializers.IntegerField(source="scan.project_id")
    head_revision = serializers.SerializerMethodField()
    return_comment = serializers.SerializerMethodField()
    prelabel_policy = serializers.CharField(
        source="scan.project.prelabel_policy", read_only=True, help_text="what the viewer does with a pre-label"
    )

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
            "prelabel_policy",
            "return_comment",
            "created_at",
            "submitted_at",
        ]

    def get_head_revision(self, assignment: Assignment) -> int | None:
        if hasattr(assignment, "head_revision_id"):  # annotated by selectors.assignment_list_rows
            return assignment.head_revision_id
        head = selectors.assignment_head(assignment=assignment)
        return head.pk if head else None

    @extend_schema_field(ReturnCommentOutput(allow_null=True))
    def get_return_comment(self, assignment: Assignment) -> dict | None:
        returned = self.context.get("return_comments")  # a list's comments, read at once
        if returned is None:
            returned = selectors.return_comments(assignments=[assignment])
        comment = returned.get(assignment.pk)
        return ReturnCommentOutput(comment).data if comment else None


class AssignmentListOutput(AssignmentOutput):
    """An assignment in the list: for the lead of the project named by ``?project=``, also every
    rater of its scan (``scan_raters``, usernames; null for anyone else: blinding)."""

    scan_subject_id = serializers.CharField(source="scan.subject_id", read_only=True)
    scan_raters = serializers.SerializerMethodField()

    class Meta(AssignmentOutput.Meta):
        fields = [*AssignmentOutput.Meta.fields, "scan_subject_id", "scan_raters"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField(), allow_null=True))
    def get_scan_raters(self, assignment: Assignment) -> list[str] | None:
        raters = self.context.get("scan_raters")
        return None if raters is None else raters.get(assignment.scan_id, [])


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
        al_retrain_every = serializers.IntegerField(min_value=1, max_value=1000, default=5)
        prelabel_policy = serializers.ChoiceField(
            choices=PrelabelPolicy.choices,
            required=False,
            allow_null=True,
            default=None,
            help_text="empty: 'offered' with 2 raters per scan or more, else 'applied'",
        )
        labels = LabelClassInput(many=True, required=False, default=list, max_length=255)
        channels = serializers.ListField(
            child=serializers.ChoiceField(choices=scan_metadata.SEQUENCES),
            max_length=services.MAX_CHANNELS,
            required=False,
            default=list,
            help_text="the sequences every scan holds, the scan's own image first; empty: one image per scan",
        )

    @extend_schema(parameters=page_parameters("projects"), responses=ProjectListOutput(many=True))
    def get(self, request):
        page = paginate(request, selectors.project_list(user=request.user).prefetch_related("label_classes"))
        progress = selectors.project_progress(user=request.user, projects=page.items)
        context = {"request": request, "progress": progress}
        return paged_response(request, ProjectListOutput(page.items, many=True, context=context).data, page)

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
        prelabel_policy = serializers.ChoiceField(choices=PrelabelPolicy.choices, required=False)
        channels = serializers.ListField(
            child=serializers.ChoiceField(choices=scan_metadata.SEQUENCES),
            max_length=services.MAX_CHANNELS,
            required=False,
            help_text="the sequences every scan holds, the scan's own image first; once there are scans the "
            "first stays",
        )

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

    @extend_schema(parameters=page_parameters("members"), responses=MemberOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        page = paginate(request, Membership.objects.filter(project=project).select_related("user"))
        return paged_response(request, MemberOutput(page.items, many=True).data, page)

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

    @extend_schema(
        responses={
            200: inline_serializer(
                "MemberRemoved",
                {
                    "reassigned": serializers.ListField(child=serializers.DictField()),
                    "deleted": serializers.ListField(child=serializers.IntegerField()),
                },
            )
        }
    )
    def delete(self, request, project_id: int, member_id: int):
        """Remove a member: submitted work stays; open assignments go to the least-loaded other annotators."""
        membership = self._get(request, project_id, member_id)
        handed = services.membership_remove(membership=membership, actor=request.user)
        return Response(
            {
                "reassigned": [{"assignment": a, "annotator": name} for a, name in handed["reassigned"]],
                "deleted": handed["deleted"],
            }
        )


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
        key = serializers.IntegerField(
            min_value=1, max_value=9, required=False, help_text="a key held by another label is swapped"
        )
        value = serializers.IntegerField(
            min_value=1, max_value=255, required=False, help_text="only while nobody has saved labels in the project"
        )

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


def vocabulary_field(options) -> serializers.ChoiceField:
    """A metadata column with a controlled vocabulary; a refusal lists the options."""
    listed = ", ".join(options)
    return serializers.ChoiceField(
        choices=options,
        required=False,
        allow_blank=True,
        error_messages={"invalid_choice": f'"{{input}}" is not one of {listed} (empty: not recorded).'},
    )


class ScanMetadataInput(serializers.Serializer):
    """The scan metadata columns (labeling/metadata.py checks them again: identifiers that look like
    a date or a record number are refused). Empty: not recorded."""

    site = serializers.CharField(max_length=64, required=False, allow_blank=True, trim_whitespace=True)
    scanner = serializers.CharField(max_length=64, required=False, allow_blank=True, trim_whitespace=True)
    field_strength = FiniteFloatField(
        min_value=scan_metadata.FIELD_STRENGTH_MIN_T,
        max_value=scan_metadata.FIELD_STRENGTH_MAX_T,
        required=False,
        allow_null=True,
        help_text="tesla",
    )
    sequence = vocabulary_field(scan_metadata.SEQUENCES)
    sex = vocabulary_field(scan_metadata.SEXES)
    age_band = vocabulary_field(scan_metadata.AGE_BANDS)

    def validate(self, attrs: dict) -> dict:
        """Only the fields named here: anything else (a name, a date of birth, a note) is refused."""
        attrs = super().validate(attrs)
        given = self.initial_data if hasattr(self.initial_data, "keys") else {}
        unknown = sorted(str(key)[:40] for key in given.keys() if key not in self.fields)
        if unknown:
            raise serializers.ValidationError(
                {
                    key: f"Unknown field: scans take only {', '.join(self.fields)}; no free-text patient data."
                    for key in unknown
                }
            )
        return attrs

    @staticmethod
    def metadata(validated: dict) -> dict:
        return {c: validated[c] for c in SCAN_METADATA_COLUMNS if c in validated}


class RaterProgressOutput(serializers.Serializer):
    username = serializers.CharField()
    status = serializers.CharField(help_text="the assignment's status: todo, in_progress, submitted, ...")


class ScanRowOutput(ScanOutput):
    """A row of the scan table: the scan, and the raters the user may see with their progress
    (every rater for a lead; for a rater, only their own assignment)."""

    raters = RaterProgressOutput(many=True, read_only=True)
    raters_submitted = serializers.IntegerField(read_only=True)
    raters_assigned = serializers.IntegerField(read_only=True)

    class Meta(ScanOutput.Meta):
        fields = [*ScanOutput.Meta.fields, "raters", "raters_submitted", "raters_assigned"]


def scan_rows(request, scans: list[Scan], *, project: Project) -> list[dict]:
    """:func:`scan_payload` with the raters of each scan (``visible_assignments``, selectors.scan_table)."""
    rows = scan_payload(request, scans, project=project)
    for row, scan in zip(rows, scans, strict=True):
        visible = getattr(scan, "visible_assignments", [])
        row["raters"] = [{"username": a.annotator.username, "status": a.status} for a in visible]
        row["raters_submitted"] = sum(1 for a in visible if a.status == "submitted")
        row["raters_assigned"] = len(visible)
    return rows


class ScanListApi(APIView):
    """The project's scans (GET) and a new scan (POST, leads and admins).

    GET answers a list, oldest first, paged as every list (``mriannot/paging.py``): ``limit``
    (default 100, at most 500) and ``offset``; the total of scans that match the filters is in the
    ``X-Total-Count`` header, and ``Link`` names the next and previous pages (RFC 8288). A rater sees only
    the scans they rate, with their own assignment's status (blinding), and cannot filter by
    scan status.
    """

    parser_classes = [MultiPartParser, FormParser]

    class QuerySerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=ScanStatus.choices, required=False, help_text="leads only")
        split = serializers.ChoiceField(choices=Split.choices, required=False)
        q = serializers.CharField(max_length=64, required=False, allow_blank=True, help_text="in subject or session id")

    class InputSerializer(ScanMetadataInput):
        file = serializers.FileField(help_text="NIfTI image, .nii or .nii.gz")
        subject_id = serializers.RegexField(r"^[A-Za-z0-9_-]{0,64}$", required=False, default="")
        session_id = serializers.RegexField(r"^[A-Za-z0-9_-]{0,64}$", required=False, default="")
        split = serializers.ChoiceField(choices=Split.choices, default=Split.UNASSIGNED)

    @extend_schema(
        parameters=[
            # One by one rather than the serializer: the status enum stays in the parameter
            # (a component named "status" would collide with the scan's own status field).
            OpenApiParameter("status", str, enum=ScanStatus.values, description="leads only"),
            OpenApiParameter("split", str, enum=Split.values),
            OpenApiParameter("q", {"type": "string", "maxLength": 64}, description="in subject or session id"),
            *page_parameters("scans that match"),
        ],
        responses=ScanRowOutput(many=True),
    )
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        if params.get("status") and not selectors.user_manages_project(user=request.user, project=project):
            raise NotAllowed("Only a lead or admin of this project can filter scans by their status.")
        scans = selectors.scan_table(
            user=request.user,
            project=project,
            status=params.get("status"),
            split=params.get("split"),
            text=params.get("q"),
        )
        page = paginate(request, scans)
        return paged_response(request, scan_rows(request, page.items, project=project), page)

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
            metadata=ScanMetadataInput.metadata(data.validated_data),
        )
        return Response(ScanOutput(scan).data, status=status.HTTP_201_CREATED)


class ScanDetailApi(APIView):
    """A scan; for its raters, ``status`` is their own assignment's (blinding)."""

    class InputSerializer(ScanMetadataInput):
        split = serializers.ChoiceField(choices=Split.choices, required=False)
        override_frozen = serializers.BooleanField(
            default=False, help_text="change a split that a model version trained or validated on"
        )

    @extend_schema(responses=ScanOutput)
    def get(self, request, scan_id: int):
        scan = get_object_or_404(selectors.scan_list(user=request.user).select_related("project"), pk=scan_id)
        return Response(scan_payload(request, [scan], project=scan.project)[0])

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "ScanUpdated",
            {
                **{name: field for name, field in ScanOutput().get_fields().items()},
                "invalidated_model_versions": serializers.ListField(child=serializers.DictField()),
            },
        ),
    )
    def patch(self, request, scan_id: int):
        """Change a scan's split or metadata (leads and admins). A frozen split (a model version
        trained or validated on the scan) needs ``override_frozen``; the answer lists the model
        versions the change invalidates."""
        scan = get_object_or_404(selectors.scan_list(user=request.user).select_related("project"), pk=scan_id)
        require_manager(request, scan.project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        scan, invalidated = services.scan_update(
            scan=scan,
            actor=request.user,
            split=data.validated_data.get("split"),
            metadata=ScanMetadataInput.metadata(data.validated_data),
            override_frozen=data.validated_data["override_frozen"],
        )
        return Response({**ScanOutput(scan).data, "invalidated_model_versions": invalidated})


class ScanImageApi(APIView):
    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request, scan_id: int):
        scan = get_object_or_404(selectors.scan_list(user=request.user), pk=scan_id)
        return nifti_response(scan.image, f"scan-{scan.pk}.nii.gz")


class ScanChannelOutput(serializers.Serializer):
    role = serializers.CharField()
    reference = serializers.BooleanField(help_text="the scan's own image: its grid is every channel's")
    present = serializers.BooleanField(help_text="false: the project declares this sequence and the scan lacks it")
    resampled = serializers.BooleanField(help_text="uploaded on another grid and resampled onto the scan's")
    coverage = serializers.FloatField(allow_null=True, help_text="fraction of the scan's voxels the upload covered")
    image = serializers.CharField(allow_null=True, help_text="where to download it (.nii.gz)")


def _channel_rows(scan: Scan) -> list[dict]:
    rows = []
    for row in selectors.scan_channel_list(scan=scan):
        channel = row["channel"]
        rows.append(
            {
                "role": row["role"],
                "reference": row["reference"],
                "present": row["present"],
                "resampled": bool(channel and channel.resampled),
                "coverage": channel.coverage if channel else (1.0 if row["present"] else None),
                "image": f"/api/v1/scans/{scan.pk}/channels/{row['role']}/image/" if row["present"] else None,
            }
        )
    return rows


class ScanChannelListApi(APIView):
    """A scan's sequences (GET: anyone who sees the scan) and a new one (POST: leads and admins).

    The scan's own image is the first; another sequence is uploaded as NIfTI and, when its grid
    differs, resampled onto the scan's (the sequences are taken as co-registered in world
    coordinates). The project must declare the sequence (``channels`` in its settings).
    """

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="NIfTI image, .nii or .nii.gz, of the same session")
        role = serializers.ChoiceField(choices=scan_metadata.SEQUENCES)

    @extend_schema(responses=ScanChannelOutput(many=True))
    def get(self, request, scan_id: int):
        scan = get_object_or_404(selectors.scan_list(user=request.user).select_related("project"), pk=scan_id)
        return Response(ScanChannelOutput(_channel_rows(scan), many=True).data)

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: ScanChannelOutput(many=True)})
    def post(self, request, scan_id: int):
        scan = get_object_or_404(selectors.scan_list(user=request.user).select_related("project"), pk=scan_id)
        require_manager(request, scan.project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.scan_channel_add(
            scan=scan,
            actor=request.user,
            raw=upload_bytes(data.validated_data["file"]),
            role=data.validated_data["role"],
        )
        return Response(ScanChannelOutput(_channel_rows(scan), many=True).data, status=status.HTTP_201_CREATED)


class ScanChannelImageApi(APIView):
    @extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
    def get(self, request, scan_id: int, role: str):
        scan = get_object_or_404(selectors.scan_list(user=request.user).select_related("project"), pk=scan_id)
        if role == selectors.project_channel_roles(project=scan.project, scan=scan)[0]:
            return nifti_response(scan.image, f"scan-{scan.pk}-{role}.nii.gz")
        channel = get_object_or_404(scan.channels.all(), role=role)
        return nifti_response(channel.image, f"scan-{scan.pk}-{role}.nii.gz")


# --- worklist, assignments, revisions -----------------------------------------------------------


class WorklistApi(APIView):
    """The current user's own assignments, open first, in priority order."""

    @extend_schema(
        parameters=[id_parameter("project"), *page_parameters("assignments")],
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
                "return_comment": ReturnCommentOutput(allow_null=True),
            },
            many=True,
        ),
    )
    def get(self, request):
        project = None
        if request.query_params.get("project"):
            project = get_visible_project(request, query_id(request, "project"))
        page = paginate(request, selectors.worklist(user=request.user, project=project))
        items = page.items
        returned = selectors.return_comments(assignments=items)
        revisions = selectors.revision_counts(assignment_ids=[a.pk for a in items])
        return paged_response(
            request,
            [
                {
                    "assignment": a.pk,
                    "scan": a.scan_id,
                    "project": a.scan.project_id,
                    "project_name": a.scan.project.name,
                    "subject_id": a.scan.subject_id,
                    "status": a.status,
                    "priority": a.priority,
                    "revisions": revisions.get(a.pk, 0),
                    "priority_note": a.scan.project.priority_note,
                    "return_comment": ReturnCommentOutput(returned[a.pk]).data if a.pk in returned else None,
                }
                for a in items
            ],
            page,
        )


class AssignmentListApi(APIView):
    """Assignments the user may see (a lead: the project's; a rater: their own), paged, each with
    its head revision and return comment read for the whole page at once (a constant number of
    queries, whatever the page or project size)."""

    @extend_schema(
        parameters=[
            id_parameter("project"),
            id_parameter("scan"),
            OpenApiParameter(
                "status",
                str,
                enum=["open", *AssignmentStatus.values],
                description="only assignments in this status; 'open': every status but submitted",
            ),
            *page_parameters("assignments"),
        ],
        responses=AssignmentListOutput(many=True),
    )
    def get(self, request):
        qs = selectors.assignment_list(user=request.user)
        context = {}
        if "project" in request.query_params:
            project_id = query_id(request, "project")
            qs = qs.filter(scan__project_id=project_id)
            context["manages"] = selectors.user_manages_project_id(user=request.user, project_id=project_id)
        if "scan" in request.query_params:
            qs = qs.filter(scan_id=query_id(request, "scan"))
        wanted = request.query_params.get("status")
        if wanted == "open":
            qs = qs.exclude(status=AssignmentStatus.SUBMITTED)
        elif wanted is not None:
            if wanted not in AssignmentStatus.values:
                raise ValidationFailed(
                    f"status must be 'open' or one of {', '.join(AssignmentStatus.values)}.", code="invalid_status"
                )
            qs = qs.filter(status=wanted)
        page = paginate(request, selectors.assignment_list_rows(assignments=qs))
        context["return_comments"] = selectors.return_comments(assignments=page.items)
        if context.get("manages"):  # the project's lead: every rater of each scan (one query a page)
            context["scan_raters"] = selectors.scan_rater_names(scan_ids={a.scan_id for a in page.items})
        data = AssignmentListOutput(page.items, many=True, context=context).data
        return paged_response(request, data, page)


class AssignmentDetailApi(APIView):
    @extend_schema(responses=AssignmentOutput)
    def get(self, request, assignment_id: int):
        assignment = get_object_or_404(selectors.assignment_list(user=request.user), pk=assignment_id)
        return Response(AssignmentOutput(assignment).data)


class RevisionListApi(APIView):
    """List an assignment's revisions, or save a new one (the body is the label volume as NIfTI bytes)."""

    parser_classes = [*NIFTI_PARSERS, MultiPartParser]

    @extend_schema(parameters=page_parameters("revisions"), responses=RevisionOutput(many=True))
    def get(self, request, assignment_id: int):
        assignment = get_object_or_404(selectors.assignment_list(user=request.user), pk=assignment_id)
        revisions = (
            selectors.revision_list(user=request.user).filter(assignment=assignment).select_related("created_by")
        )
        page = paginate(request, revisions)
        return paged_response(request, RevisionOutput(page.items, many=True).data, page)

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


class AssignmentReturnApi(APIView):
    """A lead sends a rater's submission back for rework, with a comment saying why (required)."""

    class InputSerializer(serializers.Serializer):
        comment = serializers.CharField(max_length=TEXT_MAX_CHARS, help_text="what the rater should look at again")

    @extend_schema(request=InputSerializer, responses=AssignmentOutput)
    def post(self, request, assignment_id: int):
        assignment = get_object_or_404(selectors.assignment_list(user=request.user), pk=assignment_id)
        require_manager(request, assignment.scan.project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment, _ = services.assignment_return(
            assignment=assignment, actor=request.user, comment=data.validated_data["comment"]
        )
        return Response(AssignmentOutput(assignment).data)


class CommentOutput(serializers.ModelSerializer):
    author = serializers.CharField(source="author_username")
    rater = serializers.CharField(source="assignment.annotator.username", default=None, allow_null=True)
    from_lead = serializers.SerializerMethodField(help_text="written by a lead or admin of the project")

    class Meta:
        model = Comment
        fields = ["id", "scan", "assignment", "rater", "author", "from_lead", "kind", "text", "created_at"]

    def get_from_lead(self, comment: Comment) -> bool:
        return comment.author_role in (Role.LEAD, Role.ADMIN)


class CommentListApi(APIView):
    """A scan's comments, oldest first: a project's leads read every thread (``?assignment=`` for
    one); a rater reads and writes only the thread of their own assignment with the leads."""

    class InputSerializer(serializers.Serializer):
        text = serializers.CharField(max_length=TEXT_MAX_CHARS)
        assignment = IdField(
            required=False,
            allow_null=True,
            help_text="whose thread (a lead: any assignment of the scan, or none for a note among leads; "
            "a rater: their own, the default)",
        )

    @extend_schema(
        parameters=[id_parameter("assignment"), *page_parameters("comments")], responses=CommentOutput(many=True)
    )
    def get(self, request, scan_id: int):
        scan = get_object_or_404(selectors.scan_list(user=request.user), pk=scan_id)
        comments = selectors.comment_list(user=request.user).filter(scan=scan).select_related("assignment__annotator")
        if "assignment" in request.query_params:
            comments = comments.filter(assignment_id=query_id(request, "assignment"))
        page = paginate(request, comments)
        return paged_response(request, CommentOutput(page.items, many=True).data, page)

    @extend_schema(request=InputSerializer, responses={201: CommentOutput})
    def post(self, request, scan_id: int):
        scan = get_object_or_404(selectors.scan_list(user=request.user).select_related("project"), pk=scan_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = None
        if data.validated_data.get("assignment") is not None:
            assignment = get_object_or_404(
                selectors.assignment_list(user=request.user), pk=data.validated_data["assignment"], scan=scan
            )
        comment = services.comment_create(
            scan=scan, actor=request.user, text=data.validated_data["text"], assignment=assignment
        )
        return Response(CommentOutput(comment).data, status=status.HTTP_201_CREATED)


class AuditEventOutput(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["id", "actor", "action", "target_type", "target_id", "data", "created_at"]

    def get_actor(self, event: AuditEvent) -> str | None:
        """Who did it, by the username they had then (it outlives the account); None: the system."""
        return event.actor_username or None


class AuditListApi(APIView):
    """The project's audit trail, newest first, paged."""

    @extend_schema(parameters=page_parameters("events"), responses=AuditEventOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        page = paginate(request, selectors.audit_list(project=project))
        return paged_response(request, AuditEventOutput(page.items, many=True).data, page)


# --- the lead's pages: project home, people, assignments, accounts ------------------------------


def _member_user(project: Project, username: str):
    """The user named ``username``, who must be a member of the project (400 otherwise)."""
    user = User.objects.filter(username=username, memberships__project=project).first()
    if user is None:
        raise ValidationFailed(
            f"{username!r} is not a member of this project; add them on the People page first.",
            code="not_a_member",
        )
    return user


class ProjectSummaryApi(APIView):
    """A project's counts for its home page (leads and admins): scans by stage, progress, members."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        return Response(selectors.project_summary(project=project))


class RaterStatsApi(APIView):
    """Per rater: open, in progress and submitted assignments, median time per scan (first save to
    submission, seconds) and scans per day (per day with a submission). Leads and admins.

    One row per rater (annotators of the project and anyone with assignments in it), by username,
    paged as every list. The figures are SQL aggregates over the project's assignments
    (``selectors.rater_stats``): a constant number of queries, and no assignment read into Python.
    """

    @extend_schema(
        parameters=page_parameters("raters"),
        responses=inline_serializer(
            "RaterStats",
            {
                "user_id": serializers.IntegerField(),
                "username": serializers.CharField(),
                "role": serializers.CharField(allow_null=True),
                "todo": serializers.IntegerField(),
                "in_progress": serializers.IntegerField(),
                "open": serializers.IntegerField(),
                "submitted": serializers.IntegerField(),
                "median_seconds_per_scan": serializers.FloatField(allow_null=True),
                "scans_per_day": serializers.FloatField(allow_null=True),
            },
            many=True,
        ),
    )
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        page = paginate(request, selectors.rater_stats(project=project))
        return paged_response(request, page.items, page)


class AssignmentReassignApi(APIView):
    """Give an open assignment (with its saved draft) to another annotator of the project."""

    class InputSerializer(serializers.Serializer):
        annotator = serializers.CharField(max_length=150, help_text="username of an annotator of the project")

    @extend_schema(request=InputSerializer, responses=AssignmentOutput)
    def post(self, request, assignment_id: int):
        assignment = get_object_or_404(selectors.assignment_list(user=request.user), pk=assignment_id)
        require_manager(request, assignment.scan.project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        annotator = _member_user(assignment.scan.project, data.validated_data["annotator"])
        assignment = services.assignment_reassign(assignment=assignment, actor=request.user, annotator=annotator)
        return Response(AssignmentOutput(assignment).data)


class ScanRaterAddApi(APIView):
    """Add one more rater to a scan (e.g. a third when two disagree). The scan leaves its consensus
    state; when the new rater submits, a new consensus runs on every submitted rater."""

    class InputSerializer(serializers.Serializer):
        annotator = serializers.CharField(
            max_length=150, required=False, allow_blank=True, default="", help_text="empty: the least-loaded"
        )

    @extend_schema(request=InputSerializer, responses={201: AssignmentOutput})
    def post(self, request, scan_id: int):
        scan = get_object_or_404(selectors.scan_list(user=request.user).select_related("project"), pk=scan_id)
        require_manager(request, scan.project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["annotator"]
        annotator = _member_user(scan.project, username) if username else None
        assignment = services.scan_rater_add(scan=scan, actor=request.user, annotator=annotator)
        return Response(AssignmentOutput(assignment).data, status=status.HTTP_201_CREATED)


class UserListApi(APIView):
    """Site admins create accounts (then a lead adds them to a project by username)."""

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, style={"input_type": "password"}, trim_whitespace=False)
        email = serializers.EmailField(max_length=254, required=False, allow_blank=True, default="")

    @extend_schema(
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "NewUser",
                {
                    "id": serializers.IntegerField(),
                    "username": serializers.CharField(),
                    "email": serializers.CharField(),
                },
            )
        },
    )
    def post(self, request):
        if not selectors.user_is_site_admin(request.user):
            raise NotAllowed("Only site admins can create accounts; ask one to create it.")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(actor=request.user, **data.validated_data)
        return Response({"id": user.pk, "username": user.username, "email": user.email}, status=status.HTTP_201_CREATED)


# --- the Scans page: splits by rule, metadata from a CSV, a .zip of scans ------------------------


class SplitRuleInput(serializers.Serializer):
    train = serializers.IntegerField(min_value=0, max_value=100, help_text="percent")
    validation = serializers.IntegerField(min_value=0, max_value=100, help_text="percent")
    test = serializers.IntegerField(min_value=0, max_value=100, help_text="percent")
    seed = serializers.IntegerField(min_value=0, max_value=splits.MAX_SEED, default=0)
    stratify_by = serializers.ChoiceField(
        choices=["", *SCAN_METADATA_COLUMNS], required=False, allow_blank=True, default="", help_text="empty: none"
    )
    scope = serializers.ChoiceField(
        choices=["unassigned", "all"], default="unassigned", help_text="unassigned: only scans in no split yet"
    )

    def validate(self, attrs: dict) -> dict:
        total = attrs["train"] + attrs["validation"] + attrs["test"]
        if total != 100:
            raise serializers.ValidationError(f"train, validation and test add up to {total}; they must add up to 100.")
        return attrs

    @staticmethod
    def rule(validated: dict) -> dict:
        return {
            "percentages": {s: validated[s] for s in splits.SPLITS},
            "seed": validated["seed"],
            "stratify_by": validated["stratify_by"],
            "scope": validated["scope"],
        }


#: The most moved scans a split answer lists one by one (``changed`` counts them all).
SPLIT_CHANGES_LISTED = 1000

SPLIT_PLAN_SCHEMA = inline_serializer(
    "SplitPlan",
    {
        "plan_id": serializers.CharField(),
        "rule": serializers.DictField(),
        "scans": serializers.IntegerField(help_text="scans the rule deals"),
        "counts": serializers.DictField(child=serializers.IntegerField(), help_text="split -> scans, after the rule"),
        "strata": serializers.ListField(child=serializers.DictField()),
        "changed": serializers.IntegerField(),
        "changes": serializers.ListField(child=serializers.DictField(), help_text="the first 1000 moved scans"),
        "frozen": serializers.ListField(child=serializers.DictField()),
        "invalidated_model_versions": serializers.ListField(child=serializers.DictField()),
        "applied": serializers.BooleanField(),
    },
)


def _plan_payload(plan: dict, *, applied: bool) -> dict:
    return {
        **plan,
        "changed": len(plan["changes"]),
        "changes": plan["changes"][:SPLIT_CHANGES_LISTED],
        "applied": applied,
    }


class SplitPreviewApi(APIView):
    """What a split rule would do (leads and admins): counts per split and stratum, the scans it
    moves, and those whose split is frozen (a model version used them) with the versions."""

    InputSerializer = SplitRuleInput

    @extend_schema(request=SplitRuleInput, responses=SPLIT_PLAN_SCHEMA)
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        data = SplitRuleInput(data=request.data)
        data.is_valid(raise_exception=True)
        plan = selectors.split_plan(project=project, **SplitRuleInput.rule(data.validated_data))
        return Response(_plan_payload(plan, applied=False))


class SplitApplyApi(APIView):
    """Deal the project's scans into train / validation / test by a rule (leads and admins).

    Send the preview's ``plan_id`` to be sure the result is the preview (409 ``plan_changed``
    when the scans changed since). Moving a frozen scan needs ``override_frozen``; the answer
    and the audit trail list the model versions it invalidates.
    """

    class InputSerializer(SplitRuleInput):
        override_frozen = serializers.BooleanField(default=False)
        plan_id = serializers.RegexField(r"^[0-9a-f]{16}$", required=False, help_text="from the preview")

    @extend_schema(request=InputSerializer, responses=SPLIT_PLAN_SCHEMA)
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.scan_splits_apply(
            project=project,
            actor=request.user,
            **SplitRuleInput.rule(data.validated_data),
            override_frozen=data.validated_data["override_frozen"],
            plan_id=data.validated_data.get("plan_id"),
        )
        return Response(_plan_payload(result, applied=True))


class ScanMetadataApi(APIView):
    """Scan metadata for many scans from a CSV (leads and admins); GET says what it may hold.

    The CSV names each scan by ``scan`` (id) or ``subject_id`` (and ``session_id``), and has
    metadata columns among site, scanner, field_strength, sequence, sex, age_band; any other
    column is refused (no free-text patient data). ``apply=false`` previews: every row with
    the changes it makes or its errors. ``apply=true`` stores all rows, or none when one is in
    error (400 ``csv_rows_refused`` with those rows). Empty cells leave a value as it is.
    """

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="CSV, UTF-8, a header row first")
        apply = serializers.BooleanField(default=False, help_text="false: preview only")

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        return Response(
            {
                "columns": list(SCAN_METADATA_COLUMNS),
                "titles": scan_metadata.COLUMN_TITLES,
                "key_columns": list(scan_metadata.KEY_COLUMNS),
                "vocabularies": {k: list(v) for k, v in scan_metadata.VOCABULARIES.items()},
                "identifier_pattern": scan_metadata.IDENTIFIER_PATTERN.pattern,
                "field_strength": {
                    "min": scan_metadata.FIELD_STRENGTH_MIN_T,
                    "max": scan_metadata.FIELD_STRENGTH_MAX_T,
                },
                "csv_max_bytes": scan_metadata.CSV_MAX_BYTES,
                "csv_max_rows": scan_metadata.CSV_MAX_ROWS,
            }
        )

    @extend_schema(
        request={"multipart/form-data": InputSerializer},
        responses=inline_serializer(
            "MetadataCsvResult",
            {
                "rows": serializers.ListField(child=serializers.DictField()),
                "errors": serializers.IntegerField(help_text="rows in error"),
                "changes": serializers.IntegerField(help_text="rows that change a scan"),
                "applied": serializers.BooleanField(),
            },
        ),
    )
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size is not None and upload.size > scan_metadata.CSV_MAX_BYTES:
            raise TooLarge(f"The CSV is {upload.size} bytes; at most {scan_metadata.CSV_MAX_BYTES} are accepted.")
        raw = upload.read(scan_metadata.CSV_MAX_BYTES + 1)
        if data.validated_data["apply"]:
            return Response(services.scan_metadata_import(project=project, actor=request.user, raw=raw))
        return Response({**selectors.metadata_csv_preview(project=project, raw=raw), "applied": False})


def _archive_upload(request, project_id: int, serializer_class):
    """A lead's archive upload: the project, the validated input and the archive's file, size-checked."""
    project = get_visible_project(request, project_id)
    require_manager(request, project)
    data = serializer_class(data=request.data)
    data.is_valid(raise_exception=True)
    upload = data.validated_data["file"]
    upload_bytes_check(upload)
    upload.seek(0)
    return project, data, upload.file


class ScanArchiveApi(APIView):
    """A .zip of NIfTI files, each stored as a scan (leads and admins); one result per member.

    The archive is refused whole, before anything is stored, when it is not a zip, lists too
    many entries (``MRIANNOT_MAX_ARCHIVE_MEMBERS``), holds an unsafe path (absolute, ``..``, a
    link), is encrypted, or declares too much (a member over ``MRIANNOT_MAX_UPLOAD_BYTES``, all
    over ``MRIANNOT_MAX_ARCHIVE_BYTES``, a zip bomb). Otherwise each member is stored or not on
    its own: ``stored`` (with the scan), ``duplicate`` (of the scan named) or ``refused`` with
    the server's reason. The metadata and split apply to every member.
    """

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(ScanMetadataInput):
        file = serializers.FileField(help_text=".zip of .nii / .nii.gz files")
        split = serializers.ChoiceField(choices=Split.choices, default=Split.UNASSIGNED)

    @extend_schema(
        request={"multipart/form-data": InputSerializer},
        responses=inline_serializer(
            "ArchiveResult",
            {
                "results": serializers.ListField(child=serializers.DictField()),
                "stored": serializers.IntegerField(),
                "duplicate": serializers.IntegerField(),
                "refused": serializers.IntegerField(),
            },
        ),
    )
    def post(self, request, project_id: int):
        project, data, archive = _archive_upload(request, project_id, self.InputSerializer)
        result = services.scans_archive_create(
            project=project,
            actor=request.user,
            archive=archive,
            metadata=ScanMetadataInput.metadata(data.validated_data),
            split=data.validated_data["split"],
        )
        return Response(result)


class DicomImportOutput(serializers.ModelSerializer):
    """A DICOM import as the page follows it: its state, progress and one row per series.

    ``state``: queued, analysing, review (waiting for a lead to check the roles and confirm),
    creating, done, failed or discarded. Each series row holds numbers only (series number,
    slices, TR/TE/TI in ms, field strength, shape, spacing), the guessed and the current role,
    the subject's and session's pseudonyms, its status (ready or refused after the analysis;
    stored, duplicate, refused, superseded, not_declared or no_reference once created) with a
    reason, and while it waits what the plan does with it (``plan``: scan, channel, superseded,
    not_declared, no_reference; ``plan_detail``). Never a file name or a header's text.
    """

    state = serializers.SerializerMethodField()
    series = serializers.SerializerMethodField()
    channels = serializers.SerializerMethodField(help_text="the project's declared sequences now")
    roles = serializers.SerializerMethodField(help_text="the roles a series may be given")
    requested_by = serializers.CharField(source="requested_by.username", default=None, allow_null=True)
    confirmed_by = serializers.CharField(source="confirmed_by.username", default=None, allow_null=True)

    class Meta:
        model = DicomImport
        fields = [
            "id",
            "project",
            "state",
            "phase",
            "status",
            "progress",
            "message",
            "error",
            "error_code",
            "split",
            "auto_confirm",
            "files",
            "ignored_files",
            "summary",
            "series",
            "channels",
            "roles",
            "timings",
            "requested_by",
            "confirmed_by",
            "created_at",
            "confirmed_at",
            "finished_at",
        ]

    def get_state(self, job: DicomImport) -> str:
        return dicom_imports.dicom_import_state(job)

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_series(self, job: DicomImport) -> list[dict]:
        return dicom_imports.dicom_import_rows(job)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_channels(self, job: DicomImport) -> list[str]:
        return list(job.project.channels)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_roles(self, job: DicomImport) -> list[str]:
        return list(dicom_imports.dicom.ROLES)


class DicomStudyApi(APIView):
    """A .zip of one DICOM study (leads and admins), imported as a background job: 202 with the job.

    The zip is spooled to a private temporary file (never storage) and its directory checked
    (400, nothing kept, when it is not a safe zip: the archive limits as for a .zip of scans, with
    at most ``MRIANNOT_MAX_DICOM_FILES`` files). A worker then groups the files by series,
    checks, de-identifies and converts each (progress "series 3 of 7"), removes the spooled
    file, and waits for review: follow it at ``GET /api/v1/dicom-imports/<id>/``, correct roles
    with PATCH, confirm with ``POST .../confirm/``. ``auto_confirm`` creates the scans without
    waiting. See ``docs/dicom.md``.
    """

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text=".zip of a DICOM study's files (any folder layout)")
        split = serializers.ChoiceField(choices=Split.choices, default=Split.UNASSIGNED)
        auto_confirm = serializers.BooleanField(
            default=False, help_text="create the scans with the guessed roles, without waiting for a review"
        )

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={202: DicomImportOutput})
    def post(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        upload_bytes_check(upload)
        job = dicom_imports.dicom_import_request(
            project=project,
            actor=request.user,
            upload=upload,
            split=data.validated_data["split"],
            auto_confirm=data.validated_data["auto_confirm"],
        )
        return Response(DicomImportOutput(job).data, status=status.HTTP_202_ACCEPTED)


#: The most imports the list answers (the latest first).
DICOM_IMPORTS_LISTED = 50


class DicomImportListApi(APIView):
    """The project's DICOM imports, the latest first (leads and admins)."""

    @extend_schema(responses=DicomImportOutput(many=True))
    def get(self, request, project_id: int):
        project = get_visible_project(request, project_id)
        require_manager(request, project)
        jobs = project.dicom_imports.select_related("project", "requested_by", "confirmed_by")[:DICOM_IMPORTS_LISTED]
        return Response(DicomImportOutput(jobs, many=True).data)


def _managed_import(request, import_id: int) -> DicomImport:
    job = get_object_or_404(DicomImport.objects.select_related("project", "requested_by"), pk=import_id)
    get_visible_project(request, job.project_id)  # 404 for projects the user cannot see
    require_manager(request, job.project)
    return job


class DicomRolesInput(serializers.Serializer):
    roles = serializers.DictField(
        child=serializers.ChoiceField(choices=scan_metadata.SEQUENCES),
        help_text='series number in the import -> role, for example {"2": "FLAIR"}',
    )


class DicomImportDetailApi(APIView):
    """One DICOM import: GET (its state, progress and series), PATCH ``roles`` while it waits for
    review (409 otherwise), DELETE to discard it (its staged files removed, no scan made)."""

    @extend_schema(responses=DicomImportOutput)
    def get(self, request, import_id: int):
        return Response(DicomImportOutput(_managed_import(request, import_id)).data)

    @extend_schema(request=DicomRolesInput, responses=DicomImportOutput)
    def patch(self, request, import_id: int):
        job = _managed_import(request, import_id)
        data = DicomRolesInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = dicom_imports.dicom_import_roles_set(job=job, actor=request.user, roles=data.validated_data["roles"])
        return Response(DicomImportOutput(job).data)

    @extend_schema(responses=DicomImportOutput)
    def delete(self, request, import_id: int):
        job = dicom_imports.dicom_import_discard(job=_managed_import(request, import_id), actor=request.user)
        return Response(DicomImportOutput(job).data)


class DicomImportConfirmApi(APIView):
    """Confirm the roles (optionally setting some first) and create the scans: 202, the job queued
    again for its second phase. Also sends again a creation that failed."""

    class InputSerializer(serializers.Serializer):
        roles = serializers.DictField(
            child=serializers.ChoiceField(choices=scan_metadata.SEQUENCES), required=False, default=dict
        )

    @extend_schema(request=InputSerializer, responses={202: DicomImportOutput})
    def post(self, request, import_id: int):
        job = _managed_import(request, import_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = dicom_imports.dicom_import_confirm(job=job, actor=request.user, roles=data.validated_data["roles"])
        return Response(DicomImportOutput(job).data, status=status.HTTP_202_ACCEPTED)


name_nested_serializers(globals())
