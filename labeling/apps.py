from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from . import audit_triggers, receivers  # noqa: F401  (receivers: connects the auth receivers)

        # After every migrate: a migration that rebuilds the audit table on SQLite drops its triggers.
        post_migrate.connect(audit_triggers.on_post_migrate, sender=self)
