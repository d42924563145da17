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
    # a lead's project pages: the projects list (and a new project), a project's home, settings, people
    path("projects/", views.projects_page, name="projects"),
    path("projects/<id:project_id>/", views.project_home_page, name="project-home"),
    path("projects/<id:project_id>/settings/", views.project_settings_page, name="project-settings"),
    path("projects/<id:project_id>/people/", views.project_people_page, name="project-people"),
    path("projects/<id:project_id>/scans/", views.project_scans_page, name="project-scans"),
]
