"""The README names only experiments, files and layers that exist."""

import re

import models
from config import available_experiments, load_config
from tests.common import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    assert "train_cnn.py --exp cnn_rotation_demo" in blocks[0]
    assert "eval_retrieval.py --exp cnn_rotation_demo --random-baseline" in blocks[0]
    assert "python -m pytest" in blocks[1]
    # CI runs the README's test command
    assert "python3 -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def test_every_experiment_named_in_the_readme_exists_and_runs_with_its_entry_point():
    named = set(re.findall(r"--exp (\w+)", README))
    assert {"cnn_rotation", "tcn_deform"} <= named
    assert named <= set(available_experiments())
    for line in README.splitlines():
        for script, name in re.findall(r"train_(cnn|tcn|dual)\.py --exp (\w+)", line):
            assert load_config(name).branch == script, line


def test_every_file_path_named_in_the_readme_exists():
    paths = set(re.findall(r"\b((?:docs|config|data|models|algorithms|utils|engine|tests)/[\w./-]+\.(?:py|md|png))", README))
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing


def test_model_table_matches_the_models_package():
    rows = re.findall(r"^\| `(\w+)` \| (raster|stroke|paired) \|", README, flags=re.M)
    assert {name for name, _ in rows} == set(models.MODELS)
    for name, modality in rows:
        assert models.MODELS[name].modality == modality
