"""No 500 on any input: numbers that are not numbers, ids beyond 64 bits, JSON nested without
end, text without limit. Each answers 4xx with the API's error shape and stores nothing."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework import serializers

from labeling.models import Assignment, AuditEvent, Project
from mriannot.fields import MAX_ID, TEXT_MAX_CHARS, json_validator
from mriannot.parsers import MAX_DEPTH, contains_nul, json_depth_exceeds
from tests import factories

pytestmark = pytest.mark.django_db

JSON = "application/json"
FLOAT_FIELDS = ["ambiguity_threshold", "flag_min_label_dice", "flag_max_volume_spread", "flag_max_rater_gap"]
NOT_FINITE = ['"NaN"', '"nan"', '"Infinity"', '"-Infinity"', '"inf"', "1e999", "-1e999"]
HUGE_IDS = [str(2**63), "99999999999999999999", "-99999999999999999999", "0", "-1", "1e3", "¹"]


def error_of(response) -> dict:
    body = response.json()
    assert body["error"] and body["detail"], body
    return body


# --- numbers that are not numbers ----------------------------------------------------------------


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_project_create_refuses_non_finite_numbers(world, field, value):
    body = f'{{"name": "Nan project", "{field}": {value}}}'
    response = world.client(world.lead).post("/api/v1/projects/", body, content_type=JSON)
    assert response.status_code == 400, response.content
    error_of(response)
    assert not Project.objects.filter(name="Nan project").exists()


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_project_update_refuses_non_finite_numbers(world, field, value):
    before = Project.objects.values(*FLOAT_FIELDS).get(pk=world.project.pk)
    response = world.client(world.lead).patch(
        f"/api/v1/projects/{world.project.pk}/", f'{{"{field}": {value}}}', content_type=JSON
    )
    assert response.status_code == 400, response.content
    error_of(response)
    assert Project.objects.values(*FLOAT_FIELDS).get(pk=world.project.pk) == before


def test_a_finite_number_in_a_string_is_still_taken(world):
    response = world.client(world.lead).patch(
        f"/api/v1/projects/{world.project.pk}/", {"ambiguity_threshold": "0.125"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["ambiguity_threshold"] == 0.125


def test_consensus_options_refuse_numbers_beyond_float_range(world):
    scan = factories.add_scan(world)
    response = world.client(world.lead).post(
        f"/api/v1/scans/{scan.pk}/consensus-runs/", '{"options": {"tol": 1e999}}', content_type=JSON
    )
    assert response.status_code == 400, response.content
    assert error_of(response)["error"] == "parse_error"


# --- NUL characters (PostgreSQL cannot store them: a DataError, a 500) -----------------------------


@pytest.mark.parametrize(
    "body", ['{"options": {"region": "a\\u0000b"}}', '{"options": {"x\\u0000": 1}}', '{"name": ["\\u0000"]}']
)
def test_nul_characters_in_json_strings_are_refused(world, body):
    scan = factories.add_scan(world)
    response = world.client(world.lead).post(f"/api/v1/scans/{scan.pk}/consensus-runs/", body, content_type=JSON)
    assert response.status_code == 400, response.content
    assert "NUL" in error_of(response)["detail"]


def test_an_escaped_backslash_before_u0000_is_text_not_nul():
    assert not contains_nul(json.loads('{"note": "C:\\\\u0000"}'))
    assert contains_nul({"a": [{"b": "x\x00"}]})


def test_free_json_from_a_form_is_checked_for_nul_too():
    with pytest.raises(serializers.ValidationError, match="NUL"):
        json_validator()({"region": "a\x00b"})


# --- ids beyond 64 bits ----------------------------------------------------------------------------


@pytest.fixture
def scan(world):
    return factories.add_scan(world)


@pytest.mark.parametrize("value", HUGE_IDS)
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/assignments/?project={}",
        "/api/v1/assignments/?scan={}",
        "/api/v1/me/worklist/?project={}",
    ],
)
@pytest.mark.parametrize("role", ["lead", "annotator"])
def test_list_endpoints_refuse_ids_that_are_not_ids(world, scan, path, value, role):
    user = world.lead if role == "lead" else world.annotators[0]
    response = world.client(user).get(path.format(value))
    assert response.status_code == 400, response.content
    assert error_of(response)["error"] == "invalid_id"


@pytest.mark.parametrize("value", HUGE_IDS)
def test_query_ids_of_other_endpoints_are_checked_too(world, scan, value):
    assignment = Assignment.objects.filter(scan=scan).first()
    annotator = world.client(assignment.annotator)
    labels = factories.nifti_bytes(factories.label_array(), factories.AFFINE)
    saved = annotator.post(
        f"/api/v1/assignments/{assignment.pk}/revisions/?base_revision={value}",
        labels,
        content_type="application/octet-stream",
    )
    assert saved.status_code == 400, saved.content
    edited = world.client(world.lead).post(
        f"/api/v1/scans/{scan.pk}/ground-truths/edit/?run={value}", labels, content_type="application/octet-stream"
    )
    assert edited.status_code == 400, edited.content


@pytest.mark.parametrize("value", [2**63, 2**64, 10**20, -(10**20), 0])
def test_body_ids_are_checked(world, scan, value):
    assignment = Assignment.objects.filter(scan=scan).first()
    submitted = world.client(assignment.annotator).post(
        f"/api/v1/assignments/{assignment.pk}/submit/", {"revision": value}, format="json"
    )
    assert submitted.status_code == 400, submitted.content
    accepted = world.client(world.lead).post(f"/api/v1/scans/{scan.pk}/ground-truths/", {"run": value}, format="json")
    assert accepted.status_code == 400, accepted.content


def _patterns(resolver: URLResolver, prefix: str = ""):
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, route)
        elif isinstance(entry, URLPattern):
            yield route


OUR_ROUTES = [route for route in _patterns(get_resolver()) if not route.startswith("admin/")]


def test_every_id_in_a_path_is_an_id():
    """``<int:...>`` takes any run of digits; ``<id:...>`` (mriannot/converters.py) stops at 64 bits."""
    assert [route for route in OUR_ROUTES if "<int:" in route] == []
    assert sum("<id:" in route for route in OUR_ROUTES) >= 20


@pytest.mark.parametrize("value", [str(MAX_ID + 1), "1" * 400])
@pytest.mark.parametrize("route", [route for route in OUR_ROUTES if "<id:" in route])
def test_ids_beyond_64_bits_in_a_path_are_not_found(world, route, value):
    path = "/" + re.sub(r"<id:\w+>", value, route)
    response = world.client(world.lead).get(path)
    assert response.status_code == 404, (path, response.status_code)
    error_of(response)


# --- JSON nested without end, and bodies without end -----------------------------------------------


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/auth/login/", "/api/v1/auth/token/"])
def test_json_nested_100000_levels_answers_400_without_logging_in(world, settings, path, debug):
    settings.DEBUG = debug
    body = '{"username": "lead", "password": ' + deep(100_000) + "}"
    response = world.client().post(path, body, content_type=JSON)
    assert response.status_code == 400
    assert len(response.content) < 1000  # the error, not a debug page
    error = error_of(response)
    assert error["error"] == "parse_error"
    assert f"deeper than {MAX_DEPTH} levels" in error["detail"]


def test_deep_json_is_refused_on_authenticated_endpoints_too(world):
    body = '{"name": "Deep", "labels": ' + deep(MAX_DEPTH + 1) + "}"
    response = world.client(world.lead).post("/api/v1/projects/", body, content_type=JSON)
    assert response.status_code == 400
    assert error_of(response)["error"] == "parse_error"
    assert not Project.objects.filter(name="Deep").exists()


def test_json_at_the_depth_limit_reaches_validation(world):
    """32 levels pass the parser: the serializer then says what is wrong with the labels."""
    body = '{"name": "Deep", "labels": ' + deep(MAX_DEPTH - 1) + "}"
    response = world.client(world.lead).post("/api/v1/projects/", body, content_type=JSON)
    assert response.status_code == 400
    assert error_of(response)["error"] == "invalid"


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert not json_depth_exceeds('{"a": [[1], "]]]["], "b": "' + "[" * 100 + '\\"["}', limit=3)
    assert json_depth_exceeds(deep(4), limit=3)
    assert not json_depth_exceeds(deep(3), limit=3)


def test_a_json_body_beyond_the_limit_answers_413(world, settings):
    settings.MRIANNOT_MAX_JSON_BYTES = 1000
    body = '{"name": "Big", "description": "' + "x" * 1000 + '"}'
    response = world.client(world.lead).post("/api/v1/projects/", body, content_type=JSON)
    assert response.status_code == 413
    assert error_of(response)["error"] == "too_large"


# --- text without limit ----------------------------------------------------------------------------


def test_project_description_is_limited(world):
    client = world.client(world.lead)
    too_long = client.post("/api/v1/projects/", {"name": "Long", "description": "x" * (TEXT_MAX_CHARS + 1)}, "json")
    assert too_long.status_code == 400
    assert "description" in error_of(too_long)["fields"]
    patched = client.patch(f"/api/v1/projects/{world.project.pk}/", {"description": "x" * (TEXT_MAX_CHARS + 1)}, "json")
    assert patched.status_code == 400
    assert Project.objects.get(pk=world.project.pk).description == ""
    at_limit = client.post("/api/v1/projects/", {"name": "Long", "description": "x" * TEXT_MAX_CHARS}, "json")
    assert at_limit.status_code == 201, at_limit.content


def test_the_admin_limits_the_description_too():
    assert Project._meta.get_field("description").formfield().max_length == TEXT_MAX_CHARS


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/v1/auth/login/", {"username": "u" * 151, "password": "x"}, "username"),
        ("/api/v1/auth/login/", {"username": "lead", "password": "x" * 4097}, "password"),
        ("/api/v1/projects/{project}/members/", {"username": "u" * 151, "role": "annotator"}, "username"),
        ("/api/v1/scans/{scan}/ground-truths/", {"run": 1, "note": "x" * (TEXT_MAX_CHARS + 1)}, "note"),
        ("/api/v1/scans/{scan}/consensus-runs/", {"options": {"x": "y" * 10_000}}, "options"),
    ],
)
def test_free_text_and_json_fields_are_limited(world, scan, path, body, field):
    events = AuditEvent.objects.count()
    url = path.format(project=world.project.pk, scan=scan.pk)
    response = world.client(world.lead).post(url, body, format="json")
    assert response.status_code == 400, response.content
    assert field in error_of(response)["fields"]
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize("note", ["x" * (TEXT_MAX_CHARS + 1), "a%00b"])
def test_the_note_of_an_edited_ground_truth_is_checked(world, scan, note):
    labels = factories.nifti_bytes(factories.label_array(), factories.AFFINE)
    response = world.client(world.lead).post(
        f"/api/v1/scans/{scan.pk}/ground-truths/edit/?note={note}", labels, content_type="application/octet-stream"
    )
    assert response.status_code == 400
    assert "note" in error_of(response)["fields"]
