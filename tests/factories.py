"""Factories for tests: users, projects, tiny NIfTI volumes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import factory
import nibabel as nib
import numpy as np
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from labeling import services
from labeling.models import Project, Role

User = get_user_model()
PASSWORD = "test-password"

LABELS = [
    {"value": 1, "name": "CSF", "color": "#3366ff"},
    {"value": 2, "name": "Grey matter", "color": "#999999"},
    {"value": 3, "name": "White matter", "color": "#eeeeee"},
]


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


def nifti_bytes(data: np.ndarray, affine: np.ndarray | None = None, *, gzip: bool = True) -> bytes:
    """Encode an array as NIfTI-1 bytes (gzipped unless told otherwise)."""
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    raw = img.to_bytes()
    if gzip:
        import gzip as gz

        raw = gz.compress(raw, mtime=0)
    return raw


def image_array(shape=(12, 10, 8), seed: int = 0) -> np.ndarray:
    """An asymmetric float32 test image (so flips are visible)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(shape)
    return (100 + x * 3 + y * 2 + z + rng.normal(0, 1, shape)).astype(np.float32)


AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def label_array(shape=(12, 10, 8), values=(1, 2)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        labels[2 + i * 3 : 4 + i * 3, 2:6, 2:5] = v
    return labels


@dataclass
class World:
    project: Project
    lead: User
    annotators: list
    outsider: User
    site_admin: User

    def client(self, user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client


def make_world(*, raters_per_scan: int = 2, n_annotators: int = 3) -> World:
    lead = UserFactory(username="lead")
    annotators = [UserFactory(username=f"rater{i + 1}") for i in range(n_annotators)]
    outsider = UserFactory(username="outsider")
    site_admin = UserFactory(username="siteadmin", is_staff=True)
    project = services.project_create(actor=lead, name="Test project", raters_per_scan=raters_per_scan, labels=LABELS)
    for user in annotators:
        services.membership_set(project=project, actor=lead, user=user, role=Role.ANNOTATOR)
    return World(project=project, lead=lead, annotators=annotators, outsider=outsider, site_admin=site_admin)


def add_scan(world: World, *, seed: int = 0, shape=(12, 10, 8), affine=None, subject_id: str = ""):
    raw = nifti_bytes(image_array(shape, seed), AFFINE if affine is None else affine)
    return services.scan_create(project=world.project, actor=world.lead, raw=raw, subject_id=subject_id or f"s{seed}")


def sphere_truth(shape=(24, 20, 16)) -> np.ndarray:
    """A hand-made two-label phantom: label 2 (a ball) inside label 1 (a larger ball)."""
    idx = np.indices(shape).astype(np.float32)
    centre = np.array(shape, np.float32)[:, None, None, None] / 2
    r = np.sqrt(((idx - centre) ** 2).sum(axis=0))
    truth = np.zeros(shape, np.uint8)
    truth[r < min(shape) * 0.42] = 1
    truth[r < min(shape) * 0.22] = 2
    return truth


def submit_panel(world: World, scan, label_maps) -> list:
    """Every assigned rater of ``scan`` saves one label map (in assignment order) and submits."""
    revisions = []
    for assignment, labels in zip(scan.assignments.order_by("id"), label_maps, strict=False):
        raw = nifti_bytes(np.asarray(labels, np.uint8), np.asarray(scan.affine, dtype=float))
        revision, _ = services.revision_create(
            assignment=assignment, actor=assignment.annotator, raw=raw, base_revision_id=None
        )
        services.assignment_submit(assignment=assignment, actor=assignment.annotator)
        revisions.append(revision)
    return revisions


def wait_for(predicate, timeout: float = 60.0, what: str = "the worker"):
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} ({timeout} s)")


def train_scan_with_truth(world: World, *, seed: int, shape):
    """A training-split scan with an edited ground truth (a sphere)."""
    from consensus import services as consensus_services
    from labeling.models import Split

    scan = add_scan(world, seed=seed, shape=shape)
    scan.split = Split.TRAIN
    scan.save()
    consensus_services.ground_truth_edit(
        scan=scan, actor=world.lead, raw=nifti_bytes(sphere_truth(shape), np.asarray(scan.affine))
    )
    return scan
