"""The house rules the suite checks: kernels' docstring examples run, and the models match their
migrations. (Lint and import contracts: scripts/lint.sh.)"""

from __future__ import annotations

import doctest
import importlib

import pytest
from django.core.management import call_command

#: Pure modules (no Django): their examples are part of their documentation and must stay true.
KERNELS = [
    "consensus.staple",
    "consensus.voting",
    "consensus.agreement",
    "consensus.flagging",
    "consensus.fusion",
    "consensus.dicomseg",
    "active_learning.network",
    "active_learning.uncertainty",
    "active_learning.training",
    "active_learning.working_grid",
    "simulation.anatomy",
    "simulation.fields",
    "simulation.subjects",
    "simulation.raters",
    "simulation.panels",
    "simulation.dicom",
    "labeling.volumes",
    "labeling.metadata",
    "labeling.splits",
    "labeling.archives",
    "labeling.dicom",
    "labeling.channels",
    "labeling.editing",
]


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_every_kernel_has_examples():
    missing = [name for name in KERNELS if not doctest.DocTestFinder().find(importlib.import_module(name))]
    examples = {
        name: sum(len(t.examples) for t in doctest.DocTestFinder().find(importlib.import_module(name)))
        for name in KERNELS
    }
    assert not missing and all(examples.values()), examples


@pytest.mark.django_db
def test_models_match_their_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
