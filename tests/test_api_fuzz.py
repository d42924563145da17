"""The API against its own OpenAPI schema: schemathesis generates requests for every operation
of /api/schema/ (valid and invalid), as a lead and as an annotator, and every answer must be
no server error, a documented status code, and a body that matches the documented schema.

- The requests go through Django's WSGI application in this process, on a small project with
  a finished consensus run, a ground truth, an open assignment with a saved revision, a
  queued export and a queued model version.
- Generated ids (in paths, query strings and JSON bodies) are aimed at those objects three
  times in four (the generated number decides, so a failing example replays as it was found);
  the fourth keeps what schemathesis generated (unknown, negative, huge). Invalid examples keep
  their invalid ids (strings, floats) as generated.
- Each request runs in a savepoint rolled back after it: every example meets the same project,
  and nothing reaches the broker (jobs are sent on commit).
- The user is set the way DRF's test client does (``force_authenticate``), so the run depends
  on no token or session and a fuzzed failed log-in cannot lock the run out. No operation is
  excluded: uploads are small generated bodies, and log-out or token changes roll back.
- Bounded: MAX_EXAMPLES examples per operation and role, derandomized (the same examples every
  run, so the suite does not flake; change MAX_EXAMPLES or drop derandomize to explore more).
"""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from active_learning.services import model_version_request
from consensus.models import ConsensusRun
from consensus.services import consensus_run_execute, current_ground_truth, export_request, ground_truth_accept
from labeling import services
from labeling.models import Assignment, Membership, Role, Scan, Split
from mriannot.schema import ID_SCHEMA
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

MAX_EXAMPLES = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
USER_HEADER = "X-Test-User"


class ActAs:
    """Test-only middleware: authenticate as the user named in ``X-Test-User``, as DRF's
    ``APIClient.force_authenticate`` does (DRF then uses that user and skips its authenticators)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        username = request.headers.get(USER_HEADER)
        if username:
            request._force_auth_user = get_user_model().objects.get(username=username)
        return self.get_response(request)


@pytest.fixture(params=["lead", "annotator"])
def fuzz_world(request, db):
    """A project with every kind of object, and the ids to aim at for one role."""
    world = factories.make_world(raters_per_scan=2, n_annotators=3)
    shape = (24, 20, 16)
    done = factories.add_scan(world, shape=shape, subject_id="done")
    truth = factories.sphere_truth(shape)
    other = truth.copy()
    other[:, :, :3] = 0
    factories.submit_panel(world, done, [truth, other])
    run = consensus_run_execute(run_id=ConsensusRun.objects.get(scan=done).pk)
    ground_truth = current_ground_truth(scan=done) or ground_truth_accept(run=run, actor=world.lead)
    export = export_request(project=world.project, actor=world.lead, format="nnunet", queue=False)
    Scan.objects.filter(pk=done.pk).update(split=Split.TRAIN)  # the model trains on it
    version, _ = model_version_request(project=world.project, actor=world.lead)

    open_scan = factories.add_scan(world, shape=shape, seed=1, subject_id="open")
    assignment = Assignment.objects.filter(scan=open_scan).order_by("id").first()
    labels = factories.nifti_bytes(factories.sphere_truth(shape), factories.AFFINE)
    revision, _ = services.revision_create(
        assignment=assignment, actor=assignment.annotator, raw=labels, base_revision_id=None
    )
    user = world.lead if request.param == "lead" else assignment.annotator
    ids = {
        "project_id": world.project.pk,
        "project": world.project.pk,
        "scan_id": open_scan.pk if request.param == "annotator" else done.pk,
        "scan": open_scan.pk,
        "assignment_id": assignment.pk,
        "revision_id": revision.pk,
        "revision": revision.pk,
        "base_revision": revision.pk,
        "member_id": Membership.objects.filter(project=world.project, role=Role.ANNOTATOR).first().pk,
        "label_id": world.project.label_classes.first().pk,
        "run_id": run.pk,
        "run": run.pk,
        "truth_id": ground_truth.pk,
        "export_id": export.pk,
        "version_id": version.pk,
    }
    return {"user": user, "ids": ids}


@pytest.fixture
def api_schema(fuzz_world, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.test_api_fuzz.ActAs"]
    # Django's test client keeps the test's connection open between requests; so must we.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", WSGIHandler())
        schema.config.generation.update(with_security_parameters=False)
        yield schema
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def aim(values, ids: dict) -> None:
    """Point generated ids at the fixture's objects, three times in four (path parameters come
    as strings of digits, query and body ones as integers)."""
    if not isinstance(values, dict):
        return
    for name, value in values.items():
        if name not in ids or isinstance(value, bool):
            continue
        if isinstance(value, int) and value % 4 != 3:
            values[name] = ids[name]
        elif isinstance(value, str) and value.isascii() and value.isdigit() and int(value) % 4 != 3:
            values[name] = str(ids[name])


def fuzz(operation, *, user, ids) -> None:
    """Up to MAX_EXAMPLES valid and invalid requests to ``operation``; raises on the first failure."""
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def run(case):
        aim(case.path_parameters, ids)
        aim(case.query, ids)
        aim(case.body, ids)
        headers = {USER_HEADER: user.username}
        with transaction.atomic():
            response = case.call(headers=headers)
            transaction.set_rollback(True)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()


def test_every_operation_answers_as_documented(api_schema, fuzz_world):
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert operations
    for operation in operations:
        try:
            fuzz(operation, **fuzz_world)
        except (Exception, FailureGroup) as exc:  # noqa: BLE001  every operation is tried; all are reported
            failures.append(f"{operation.label}: {exc}")
    assert not failures, f"{len(failures)} of {len(operations)} operations failed:\n\n" + "\n\n".join(failures)


def test_every_operation_documents_its_errors_and_ids():
    """What the fuzzing holds the answers to: the error shape on every operation, ids as ids."""
    raw = SchemaGenerator().get_schema(request=None, public=True)
    operations = [op for item in raw["paths"].values() for op in item.values()]
    error = {"$ref": "#/components/schemas/Error"}
    assert all(op["responses"]["4XX"]["content"]["application/json"]["schema"] == error for op in operations)
    assert raw["components"]["schemas"]["Error"]["required"] == ["error", "detail"]
    id_names = {"project", "scan", "run"}  # query parameters that take an id
    ids = [
        (p["in"], p["schema"])
        for op in operations
        for p in op.get("parameters", [])
        if p["name"].endswith("_id") or (p["in"] == "query" and p["name"] in id_names)
    ]
    assert {where for where, _ in ids} == {"path", "query"}
    assert all(schema == ID_SCHEMA for _, schema in ids)
    # A PATCH body is documented as its view validates it: a member's role is required.
    assert raw["components"]["schemas"]["MemberDetailInputRequest"]["required"] == ["role"]
