from django.urls import path

from . import apis

urlpatterns = [
    path("projects/<int:project_id>/models/", apis.ModelVersionListApi.as_view(), name="model-list"),
    path("models/<int:version_id>/", apis.ModelVersionDetailApi.as_view(), name="model-detail"),
    path("projects/<int:project_id>/ranking/", apis.RankingApi.as_view(), name="ranking"),
    path("projects/<int:project_id>/editing-effort/", apis.EditingEffortApi.as_view(), name="editing-effort"),
    path("assignments/<int:assignment_id>/prelabel/", apis.PrelabelApi.as_view(), name="prelabel"),
]
