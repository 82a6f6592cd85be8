"""Imports point down (docs/DESIGN.md, Dependencies): no import circle between modules, and no import from a lower
layer up to a higher one beyond the two known ones (scripts/import_graph.py defines the layers)."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imports_point_down():
    graph = import_graph()
    edges, _, _ = graph.graph()
    assert graph.circles(edges) == []
    assert graph.upward(edges) == [
        "core.cli (layer 8) -> webui.serve (layer 9)",  # the `webui` command starts the UI
        "core.methods.distill (layer 4) -> core.training.distillation (layer 6)",  # the distill trainer
    ]
    assert all(module in edges for module in ("core.config", "core.models.chatglm", "webui.app"))  # really read


def test_every_module_has_a_layer():
    graph = import_graph()
    for module in graph.module_names():
        assert graph.unit_of(module) in graph.LAYER, f"{module} has no layer in scripts/import_graph.py"
