from django.urls import path

from . import apis

urlpatterns = [
    path("scans/<int:scan_id>/consensus-runs/", apis.ScanRunListApi.as_view(), name="scan-consensus-runs"),
    path("consensus-runs/<int:run_id>/", apis.RunDetailApi.as_view(), name="consensus-run-detail"),
    path("consensus-runs/<int:run_id>/labels/", apis.RunFileApi.as_view(kind="labels"), name="consensus-run-labels"),
    path("consensus-runs/<int:run_id>/posterior/", apis.RunFileApi.as_view(kind="posterior"), name="consensus-run-posterior"),
    path("projects/<int:project_id>/agreement/", apis.ProjectAgreementApi.as_view(), name="project-agreement"),
    path("projects/<int:project_id>/flagged-scans/", apis.FlaggedScanListApi.as_view(), name="flagged-scans"),
]
