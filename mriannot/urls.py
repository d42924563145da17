"""URL root: the API under /api/v1/, its schema and docs, the admin, and the front end."""

import sys

from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from .apis import QueueHealthApi
from .errors import fault_response, storage_fault


def not_found(request, exception=None):
    return JsonResponse(
        {
            "error": "not_found",
            "detail": f"No such page: {request.path}. The API lives under /api/v1/ (docs: /api/docs/).",
        },
        status=404,
    )


def server_error(request):
    # Django calls this inside its ``except``: a storage fault raised outside any view (the
    # session saved by its middleware, say) still answers the 503 that says so.
    fault = storage_fault(sys.exc_info()[1])
    if fault is not None:
        return fault_response(fault)
    return JsonResponse(
        {"error": "server_error", "detail": "Something went wrong on the server; it has been logged."}, status=500
    )


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("labeling.urls")),
    path("api/v1/", include("consensus.urls")),
    path("api/v1/", include("active_learning.urls")),
    path("api/v1/queues/", QueueHealthApi.as_view(), name="queue-health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script from a URL: no inline script under the Content-Security-Policy.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="frontend/swagger_ui.html"),
        name="api-docs",
    ),
    path("", include("frontend.urls")),
]

handler404 = "mriannot.urls.not_found"
handler500 = "mriannot.urls.server_error"
