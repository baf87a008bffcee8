"""Imports run one way: no cycle between pneumo's packages, none between its modules except the model
registry's plugin pattern (scripts/import_graph.py, over grimp's graph of every import statement)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


@pytest.fixture(scope="module")
def report() -> dict:
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.analyse()


def test_no_cycle_between_packages(report):
    assert report["package_cycles"] == []
    assert "pneumo.evaluation" not in report["package_edges"]["pneumo.training"]  # the old cycle
    assert "pneumo.inference" not in report["package_edges"]["pneumo.training"]


def test_no_cycle_between_modules_but_the_registry(report):
    assert report["module_cycles"] == []
    (registry,) = report["allowed_module_cycles"]
    assert "pneumo.models.registry" in registry


def test_the_analysis_sees_a_cycle_when_there_is_one():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert module.strongly_connected({"a", "b", "c", "d"}, edges) == [{"a", "b", "c"}]
