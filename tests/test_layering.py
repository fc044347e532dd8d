"""The import graph: the service reaches neither research code nor the batch indexer."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

RESEARCH = ("model.training", "model.evaluation", "model.cli", "indexer")


def _modules_after(statement: str) -> set[str]:
    # A fresh interpreter: this test process has imported everything already.
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _reached(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_service_imports_no_research_code_and_no_indexer():
    modules = _modules_after("import service.app, service.__main__")
    assert "catalog" in modules  # the check sees the service's real imports
    assert "model.embedding" in modules
    assert _reached(modules, RESEARCH) == []
    # the heavy research dependencies stay out of the service image too
    assert _reached(modules, ("sklearn", "matplotlib", "h5py")) == []


def test_catalog_and_core_import_neither_service_nor_indexer():
    modules = _modules_after("import catalog, model.embedding, model.checkpoint, model.features")
    assert _reached(modules, (*RESEARCH, "service")) == []


def test_indexer_does_not_import_the_service():
    modules = _modules_after("import indexer.__main__, indexer.run")
    assert "catalog" in modules
    assert _reached(modules, ("service", "model.training", "model.evaluation")) == []


def test_public_surface(random_checkpoint):
    import model

    emb = model.load_model(random_checkpoint, device="cpu")
    assert isinstance(emb, model.Embedder)
    assert emb.features == model.FeatureConfig.from_dict(emb.features.to_dict())
