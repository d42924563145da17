from django.contrib import admin

from .models import ConsensusRun, RaterPerformance


class RaterPerformanceInline(admin.TabularInline):
    model = RaterPerformance
    extra = 0
    can_delete = False
    readonly_fields = ["rater_index", "annotator", "revision", "sensitivity", "specificity", "dice"]
    exclude = ["confusion"]


@admin.register(ConsensusRun)
class ConsensusRunAdmin(admin.ModelAdmin):
    list_display = ["id", "scan", "method", "status", "ambiguity", "flagged", "created_at", "finished_at"]
    list_filter = ["status", "method", "flagged", "scan__project"]
    inlines = [RaterPerformanceInline]
    readonly_fields = [f.name for f in ConsensusRun._meta.fields]
