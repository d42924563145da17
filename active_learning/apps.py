from django.apps import AppConfig


class ActiveLearningConfig(AppConfig):
    name = "active_learning"
    verbose_name = "Active learning"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (connects the signal receivers)
