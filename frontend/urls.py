"""Pages of the browser front end; the pages fetch everything else from /api/v1/."""

from django.urls import path

import mriannot.converters  # noqa: F401  (registers <id:...>)

from . import views

urlpatterns = [
    path("", views.worklist_page, name="home"),
    path("login/", views.login_page, name="login"),
    path("annotate/<id:assignment_id>/", views.annotate_page, name="annotate"),
    path("dashboard/", views.dashboard_page, name="dashboard-index"),
    path("dashboard/<id:project_id>/", views.dashboard_page, name="dashboard"),
    path("review/<id:scan_id>/", views.review_page, name="review"),
    path("exports/<id:project_id>/", views.exports_page, name="exports"),
]
