from django.contrib import admin

from .models import (
    AnnotationRevision,
    Assignment,
    AuditEvent,
    Comment,
    LabelClass,
    Membership,
    Project,
    Scan,
)


class LabelClassInline(admin.TabularInline):
    model = LabelClass
    extra = 0


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "raters_per_scan", "ambiguity_threshold", "al_strategy", "is_simulated", "created_at"]
    inlines = [LabelClassInline, MembershipInline]


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "subject_id", "session_id", "split", "status", "orientation", "created_at"]
    list_filter = ["project", "status", "split"]
    readonly_fields = ["sha256", "image", "shape", "spacing", "affine", "orientation"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "scan", "annotator", "status", "priority"]
    list_filter = ["status", "scan__project"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is append-only: the admin can look, never change."""

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(AnnotationRevision)
class AnnotationRevisionAdmin(ReadOnlyAdmin):
    list_display = ["id", "assignment", "number", "base", "source", "created_by", "created_at"]


@admin.register(Comment)
class CommentAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "scan", "assignment", "author_username", "kind"]
    list_filter = ["kind", "scan__project"]
    fields = readonly_fields = [
        "created_at",
        "scan",
        "assignment",
        "author_username",
        "author_id",
        "author_role",
        "kind",
        "text",
    ]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    # Ids and the username snapshot, never the relations: an event outlives its user and project.
    list_display = ["created_at", "actor_username", "actor_id", "project_id", "action", "target_type", "target_id"]
    list_filter = ["action"]
    search_fields = ["actor_username", "action", "target_id"]
    fields = readonly_fields = [
        "created_at",
        "actor_username",
        "actor_id",
        "project_id",
        "action",
        "target_type",
        "target_id",
        "data",
    ]
