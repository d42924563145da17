from django.urls import path

import mriannot.converters  # noqa: F401  (registers <id:...>)

from . import apis

urlpatterns = [
    path("scans/<id:scan_id>/consensus-runs/", apis.ScanRunListApi.as_view(), name="scan-consensus-runs"),
    path("consensus-runs/<id:run_id>/", apis.RunDetailApi.as_view(), name="consensus-run-detail"),
    path("consensus-runs/<id:run_id>/labels/", apis.RunFileApi.as_view(kind="labels"), name="consensus-run-labels"),
    path("consensus-runs/<id:run_id>/uncertainty/", apis.RunUncertaintyApi.as_view(), name="consensus-run-uncertainty"),
    path(
        "consensus-runs/<id:run_id>/posterior/",
        apis.RunFileApi.as_view(kind="posterior"),
        name="consensus-run-posterior",
    ),
    path("scans/<id:scan_id>/review/", apis.ScanReviewApi.as_view(), name="scan-review"),
    path("scans/<id:scan_id>/ground-truths/", apis.GroundTruthListApi.as_view(), name="ground-truth-list"),
    path("scans/<id:scan_id>/ground-truths/edit/", apis.GroundTruthEditApi.as_view(), name="ground-truth-edit"),
    path("ground-truths/<id:truth_id>/labels/", apis.GroundTruthLabelsApi.as_view(), name="ground-truth-labels"),
    path("projects/<id:project_id>/exports/", apis.ExportListApi.as_view(), name="export-list"),
    path("exports/<id:export_id>/", apis.ExportDetailApi.as_view(), name="export-detail"),
    path("exports/<id:export_id>/download/", apis.ExportDownloadApi.as_view(), name="export-download"),
    path("projects/<id:project_id>/agreement/", apis.ProjectAgreementApi.as_view(), name="project-agreement"),
    path("projects/<id:project_id>/flagged-scans/", apis.FlaggedScanListApi.as_view(), name="flagged-scans"),
]
