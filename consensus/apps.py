from django.apps import AppConfig


class ConsensusConfig(AppConfig):
    name = "consensus"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (connects the signal receivers)
