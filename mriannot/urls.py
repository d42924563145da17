"""URL root: the API under /api/v1/, its schema and docs, the admin, and the front end."""

from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView


def not_found(request, exception=None):
    return JsonResponse(
        {
            "error": "not_found",
            "detail": f"No such page: {request.path}. The API lives under /api/v1/ (docs: /api/docs/).",
        },
        status=404,
    )


def server_error(request):
    return JsonResponse(
        {"error": "server_error", "detail": "Something went wrong on the server; it has been logged."}, status=500
    )


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("labeling.urls")),
    path("api/v1/", include("consensus.urls")),
    path("api/v1/", include("active_learning.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("frontend.urls")),
]

handler404 = "mriannot.urls.not_found"
handler500 = "mriannot.urls.server_error"
