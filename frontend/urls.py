"""Pages of the browser front end; the pages fetch everything else from /api/v1/."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.worklist_page, name="home"),
    path("login/", views.login_page, name="login"),
    path("annotate/<int:assignment_id>/", views.annotate_page, name="annotate"),
    path("dashboard/", views.dashboard_page, name="dashboard-index"),
    path("dashboard/<int:project_id>/", views.dashboard_page, name="dashboard"),
    path("review/<int:scan_id>/", views.review_page, name="review"),
    path("exports/<int:project_id>/", views.exports_page, name="exports"),
]
