"""HTTP API of the project package: the health of the job queues, for the dashboard."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from .queue import queues_health


class QueueHealthApi(APIView):
    """Per queue: jobs waiting (count, oldest age in seconds), the workers consuming it (None when
    Redis cannot be reached), when a worker last consumed it, and ``no_worker``. Counts and ages
    only, of every project: nothing any signed-in user may not know."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(queues_health())
