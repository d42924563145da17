from django.urls import path

import mriannot.converters  # noqa: F401  (registers <id:...>)

from . import apis, editing_apis

urlpatterns = [
    path("auth/login/", apis.LoginApi.as_view(), name="auth-login"),
    path("auth/logout/", apis.LogoutApi.as_view(), name="auth-logout"),
    path("auth/token/", apis.TokenApi.as_view(), name="auth-token"),
    path("me/", apis.MeApi.as_view(), name="me"),
    path("me/worklist/", apis.WorklistApi.as_view(), name="worklist"),
    path("me/tokens/", apis.MyTokenListApi.as_view(), name="my-token-list"),
    path("me/tokens/<id:token_id>/", apis.MyTokenDetailApi.as_view(), name="my-token-detail"),
    path("projects/", apis.ProjectListApi.as_view(), name="project-list"),
    path("projects/<id:project_id>/", apis.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<id:project_id>/members/", apis.MemberListApi.as_view(), name="member-list"),
    path("projects/<id:project_id>/members/<id:member_id>/", apis.MemberDetailApi.as_view(), name="member-detail"),
    path("projects/<id:project_id>/labels/", apis.LabelClassListApi.as_view(), name="label-list"),
    path("projects/<id:project_id>/labels/<id:label_id>/", apis.LabelClassDetailApi.as_view(), name="label-detail"),
    path("projects/<id:project_id>/scans/", apis.ScanListApi.as_view(), name="scan-list"),
    path("projects/<id:project_id>/scan-archives/", apis.ScanArchiveApi.as_view(), name="scan-archive"),
    path("projects/<id:project_id>/dicom-studies/", apis.DicomStudyApi.as_view(), name="dicom-study"),
    path("projects/<id:project_id>/dicom-imports/", apis.DicomImportListApi.as_view(), name="dicom-import-list"),
    path("dicom-imports/<id:import_id>/", apis.DicomImportDetailApi.as_view(), name="dicom-import-detail"),
    path("dicom-imports/<id:import_id>/confirm/", apis.DicomImportConfirmApi.as_view(), name="dicom-import-confirm"),
    path("projects/<id:project_id>/scan-metadata/", apis.ScanMetadataApi.as_view(), name="scan-metadata"),
    path("projects/<id:project_id>/splits/", apis.SplitApplyApi.as_view(), name="split-apply"),
    path("projects/<id:project_id>/splits/preview/", apis.SplitPreviewApi.as_view(), name="split-preview"),
    path("projects/<id:project_id>/audit/", apis.AuditListApi.as_view(), name="audit-list"),
    path("projects/<id:project_id>/summary/", apis.ProjectSummaryApi.as_view(), name="project-summary"),
    path("projects/<id:project_id>/raters/", apis.RaterStatsApi.as_view(), name="rater-stats"),
    path("scans/<id:scan_id>/raters/", apis.ScanRaterAddApi.as_view(), name="scan-rater-add"),
    path("assignments/<id:assignment_id>/reassign/", apis.AssignmentReassignApi.as_view(), name="assignment-reassign"),
    path("users/", apis.UserListApi.as_view(), name="user-list"),
    path("scans/<id:scan_id>/", apis.ScanDetailApi.as_view(), name="scan-detail"),
    path("scans/<id:scan_id>/image/", apis.ScanImageApi.as_view(), name="scan-image"),
    path("scans/<id:scan_id>/channels/", apis.ScanChannelListApi.as_view(), name="scan-channel-list"),
    path(
        "scans/<id:scan_id>/channels/<slug:role>/image/", apis.ScanChannelImageApi.as_view(), name="scan-channel-image"
    ),
    path("assignments/", apis.AssignmentListApi.as_view(), name="assignment-list"),
    path("assignments/<id:assignment_id>/", apis.AssignmentDetailApi.as_view(), name="assignment-detail"),
    path("assignments/<id:assignment_id>/revisions/", apis.RevisionListApi.as_view(), name="revision-list"),
    path(
        "assignments/<id:assignment_id>/operations/<slug:operation>/",
        editing_apis.AssignmentOperationApi.as_view(),
        name="assignment-operation",
    ),
    path("assignments/<id:assignment_id>/submit/", apis.AssignmentSubmitApi.as_view(), name="assignment-submit"),
    path("assignments/<id:assignment_id>/return/", apis.AssignmentReturnApi.as_view(), name="assignment-return"),
    path("scans/<id:scan_id>/comments/", apis.CommentListApi.as_view(), name="scan-comments"),
    path("revisions/<id:revision_id>/", apis.RevisionDetailApi.as_view(), name="revision-detail"),
    path("revisions/<id:revision_id>/labels/", apis.RevisionLabelsApi.as_view(), name="revision-labels"),
]
