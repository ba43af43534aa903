"""The layout's rules, read from the source: leaf packages import no other project package,
and the evaluation's modules have names no other package uses."""

import ast
from pathlib import Path

import pytest

from tests.common import ROOT

LEAVES = ("config", "data", "models", "algorithms", "utils")
PACKAGES = LEAVES + ("engine", "evaluation")


def project_imports(package: str, root: Path = ROOT) -> list[str]:
    """``file: imported module`` for every import of another project package in ``package``."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue  # relative imports stay inside the package
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    found.append(f"{path.relative_to(root)}: {name}")
    return found


@pytest.mark.parametrize("package", LEAVES)
def test_leaf_packages_import_no_other_project_package(package):
    assert project_imports(package) == []


def test_the_check_sees_imports_anywhere_in_a_file(tmp_path):
    pkg = tmp_path / "models"
    pkg.mkdir()
    (pkg / "a.py").write_text("import torch\nfrom . import b\ndef f():\n    from data.sketch import Sketch\n")
    (pkg / "b.py").write_text("import utils.atomic as u, os\n")
    assert project_imports("models", tmp_path) == ["models/a.py: data.sketch", "models/b.py: utils.atomic"]


def test_evaluation_module_names_are_used_by_no_other_package():
    def names(package):
        return {p.stem for p in (ROOT / package).rglob("*.py") if p.stem != "__init__"}

    ours = names("evaluation")
    clash = {n: p for p in PACKAGES if p != "evaluation" for n in names(p) & ours}
    assert clash == {}


#: The evaluation's modules in pipeline order: each may import only those before it
#: (``run``, ``extract`` and ``recalibrate``, the callers, may import them all).
EVALUATION_ORDER = ("output_files", "feature_matrix", "encoders", "features", "descriptors", "metrics", "report",
                    "pictures")


def test_evaluation_stages_only_import_earlier_stages():
    backwards = []
    for path in sorted((ROOT / "evaluation").rglob("*.py")):
        rel = path.relative_to(ROOT / "evaluation").with_suffix("")
        me = rel.parts[0]
        if me in ("run", "extract", "recalibrate", "__init__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("evaluation"):
                continue
            if node.module == "evaluation":  # from evaluation import features, report
                others = [alias.name for alias in node.names]
            else:
                others = [node.module.split(".")[1]]
            for other in others:
                if other != me and EVALUATION_ORDER.index(other) >= EVALUATION_ORDER.index(me):
                    backwards.append(f"{rel}: {other}")
    assert backwards == []
