from django.urls import path

import mriannot.converters  # noqa: F401  (registers <id:...>)

from . import apis

urlpatterns = [
    path("projects/<id:project_id>/models/", apis.ModelVersionListApi.as_view(), name="model-list"),
    path("models/<id:version_id>/", apis.ModelVersionDetailApi.as_view(), name="model-detail"),
    path("models/<id:version_id>/card/", apis.ModelCardApi.as_view(), name="model-card"),
    path("models/<id:version_id>/card.md", apis.ModelCardMarkdownApi.as_view(), name="model-card-markdown"),
    path("projects/<id:project_id>/ranking/", apis.RankingApi.as_view(), name="ranking"),
    path("projects/<id:project_id>/editing-effort/", apis.EditingEffortApi.as_view(), name="editing-effort"),
    path("assignments/<id:assignment_id>/prelabel/", apis.PrelabelApi.as_view(), name="prelabel"),
]
