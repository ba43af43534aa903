"""The reproduction study script (scripts/study.py): its commands are valid project commands,
its rows line up with what eval_retrieval.py writes, and its statistics and verdicts are
the hand-computed ones."""

from __future__ import annotations

import importlib.util
import json
import math
import shlex
import sys
from pathlib import Path

import pytest

from config import load_config
from data.prepare import FILL_MODES, parse_per_class
from engine.cli import load_for_branch, overrides_from_args, train_parser
from evaluation.descriptors import parse_part
from evaluation.run import eval_parser
from tests.common import ROOT

_spec = importlib.util.spec_from_file_location("study", ROOT / "scripts" / "study.py")
study = importlib.util.module_from_spec(_spec)
sys.modules["study"] = study  # dataclasses look their module up while the class is built
_spec.loader.exec_module(study)


def _expected_rows(args) -> int:
    """Rows eval_retrieval.py writes (docs/EVALUATION.md): the checkpoint, its random init,
    each baseline, each fused group and, with --random-baseline, each group's random init."""
    per_random = 1 if args.random_baseline else 0
    main = (1 + per_random) if args.ckpt else 0
    return main + len(args.baseline) + len(args.fuse) * (1 + per_random)


@pytest.mark.parametrize("scale", sorted(study.SCALES))
def test_every_planned_command_is_a_valid_project_command(tmp_path, scale):
    steps = study.plan(tmp_path / "work", scale, "../shared/quickdraw")
    keys = [s.key for s in steps]
    assert len(keys) == len(set(keys)), "step keys must be unique (they name logs and results)"
    trained = set()
    for step in steps:
        argv = shlex.split(step.shell())[1:]  # what the document prints is what runs
        assert argv == step.argv
        if step.kind == "prepare":
            assert argv[:2] == ["-m", "data.prepare"]
            assert sum(parse_per_class(argv[argv.index("--per-class") + 1]).values()) > 0
            assert argv[argv.index("--fill") + 1] in FILL_MODES
        elif step.kind == "train":
            branch = argv[0].removeprefix("train_").removesuffix(".py")
            args = train_parser(branch).parse_args(argv[1:])
            cfg = load_for_branch(args.exp, branch, overrides_from_args(args))  # overrides are valid keys
            assert cfg.train.epochs == step.epochs
            assert Path(cfg.train.out) / cfg.name == step.run_dir
            trained.add(str(step.run_dir / "best.pt"))
        else:
            args = eval_parser().parse_args(argv[1:])
            assert _expected_rows(args) == len(step.rows), step.key
            # a part may name a layer (a dual checkpoint's branch): PATH[:LAYER][@WEIGHT]
            used = ([args.ckpt] if args.ckpt else []) + [str(parse_part(p).path) for p in args.baseline] + [
                str(parse_part(p).path) for g in args.fuse for p in g]
            assert used and set(used) <= trained, f"{step.key} evaluates a checkpoint no step trains"
    # Seed by seed (a study stopped part-way has its finished seeds complete); each
    # evaluation came after the trainings it reads (checked above, in this order).
    seeds = [study.seed_of(s) for s in steps]
    assert seeds[0] == -1 and seeds == sorted(seeds)
    # Every row of the table is produced by some evaluation, but the rows of an architecture
    # the scale leaves out (no seeds), which none produces.
    produced = {r for s in steps for r in s.rows}
    s = study.SCALES[scale]
    left_out = ({"cnn_rotation_resnet", "random_resnet"} if not s["resnet_seeds"] else set()) | (
        {"tcn_rotation_dilated", "random_tcn_dilated"} if not s["dilated_seeds"] else set())
    assert {rid for rid, _, _ in study.TABLE} - left_out <= produced and not left_out & produced


def test_cpu_scale_is_the_paper_experiments_with_stated_reductions(tmp_path):
    steps = study.plan(tmp_path, "cpu", "q")
    cnn = [s for s in steps if s.kind == "train" and s.argv[0] == "train_cnn.py" and s.argv[2] in study.CNN_RUNS]
    control = [s for s in steps if s.kind == "train" and study.SGD_CONTROL in s.key]
    tcn = [s for s in steps if s.kind == "train" and s.argv[0] == "train_tcn.py" and s.argv[2] in study.TCN_RUNS
           and s not in control]
    generic = [s for s in steps if s.kind == "train" and s.argv[2] in study.CNN_GENERIC_RUNS + study.TCN_GENERIC_RUNS]
    dual = [s for s in steps if s.kind == "train" and s.argv[0] == "train_dual.py" and s.argv[2] in study.DUAL_RUNS]
    assert len(cnn) + len(tcn) + len(generic) + len(dual) + len(control) == sum(s.kind == "train" for s in steps)
    # Reduced to fit about 2.5 hours (issue 17): no ResNet-18 and no dilated TCN at this
    # scale (both are in the full one), one seed for the generic CNN baselines; three seeds
    # for everything else.
    assert {s.argv[2] for s in cnn} == set(study.CNN_RUNS) - {study.RESNET_RUN}
    assert {s.argv[2] for s in tcn} == set(study.TCN_RUNS) - {study.DILATED_RUN}
    assert len(cnn) == (len(study.CNN_RUNS) - 1) * 3 and len(tcn) == (len(study.TCN_RUNS) - 1) * 3
    assert len(generic) == len(study.CNN_GENERIC_RUNS) * 1 + len(study.TCN_GENERIC_RUNS) * 3
    assert len(dual) == len(study.DUAL_RUNS) * 3 and len(control) == 3
    full = study.plan(tmp_path, "full", "q")
    assert {study.RESNET_RUN, study.DILATED_RUN} <= {s.argv[2] for s in full if s.kind == "train"}
    # A fused row pairs the CNN and TCN runs of the same seed.
    for step in (s for s in steps if s.key.startswith("eval-dual-seed")):
        seed = step.key.rsplit("seed", 1)[1]
        fused = step.argv[step.argv.index("--fuse") + 1: step.argv.index("--fuse") + 3]
        assert all(f"/seed{seed}/" in path for path in fused), fused
    args = train_parser("cnn").parse_args(cnn[0].argv[1:])
    cfg = load_config("cnn_rotation", overrides_from_args(args))
    assert cfg.data.image_size == 112 and cfg.model.name == "alexnet"


def test_generic_baselines_get_the_same_overrides_data_seeds_and_evaluation(tmp_path):
    steps = study.plan(tmp_path, "cpu", "q")
    s = study.SCALES["cpu"]
    for branch, runs, paper in (("cnn", study.CNN_GENERIC_RUNS, "cnn_rotation"),
                                ("tcn", study.TCN_GENERIC_RUNS, "tcn_rotation")):
        reference = next(st for st in steps if st.key == f"train-{paper}-seed0")
        for seed in s[f"generic_{branch}_seeds"]:
            for exp in runs:
                step = next(st for st in steps if st.key == f"train-{exp}-seed{seed}")
                # everything but the experiment and seed is the paper's run's command
                same = [a for a in step.argv if a not in (exp, str(seed)) and f"seed{seed}" not in a]
                ref = [a for a in reference.argv if a not in (paper, "0") and "seed0" not in a]
                assert same == ref, (step.key, same, ref)
            ev = next(st for st in steps if st.key == f"eval-{branch}-generic-seed{seed}")
            assert ev.rows == list(runs)
            paper_eval = next(st for st in steps if st.key == f"eval-{branch}-seed0")
            tail = lambda argv: argv[argv.index("--probe"):argv.index("--json")]  # noqa: E731
            assert tail(ev.argv) == tail(paper_eval.argv)  # the same probe recipe
    for seed in set(s["generic_cnn_seeds"]) & set(s["generic_tcn_seeds"]):
        dual = next(st for st in steps if st.key == f"eval-generic-dual-seed{seed}")
        assert dual.rows == [f"fuse_dual_{m}" for m in study.GENERIC]
        groups = [i for i, a in enumerate(dual.argv) if a == "--fuse"]
        for i, m in zip(groups, study.GENERIC):
            assert dual.argv[i + 1].endswith(f"seed{seed}/cnn_{m}/best.pt")
            assert dual.argv[i + 2].endswith(f"seed{seed}/tcn_{m}/best.pt")


def test_crossmodal_runs_get_the_cnn_overrides_store_seeds_and_evaluation(tmp_path):
    steps = study.plan(tmp_path, "cpu", "q")
    s = study.SCALES["cpu"]
    assert s["dual_seeds"] == s["cnn_seeds"] and s["dual"] == s["cnn"]  # 112 px, 4 epochs, batch 64, schedule
    reference = next(st for st in steps if st.key == "train-cnn_rotation-seed0")
    paper_eval = next(st for st in steps if st.key == "eval-cnn-seed0")
    tail = lambda argv: argv[argv.index("--probe"):argv.index("--json")]  # noqa: E731
    for seed in s["dual_seeds"]:
        for exp in study.DUAL_RUNS:
            step = next(st for st in steps if st.key == f"train-{exp}-seed{seed}")
            same = [a for a in step.argv[1:] if a not in (exp, str(seed)) and f"seed{seed}" not in a]
            ref = [a for a in reference.argv[1:] if a not in ("cnn_rotation", "0") and "seed0" not in a]
            assert step.argv[0] == "train_dual.py" and same == ref, (step.key, same, ref)
            args = train_parser("dual").parse_args(step.argv[1:])
            cfg = load_config(exp, overrides_from_args(args))
            assert (cfg.data.image_size, cfg.train.batch_size, cfg.train.epochs) == (112, 64, 4)
            ev = next(st for st in steps if st.key == f"eval-{exp}-seed{seed}")
            assert ev.rows == [f"{exp}_raster", f"{exp}_stroke", f"fuse_{exp}"]
            ckpt = str(step.run_dir / "best.pt")
            argv = ev.argv
            assert argv[argv.index("--ckpt") + 1] == ckpt and argv[argv.index("--layer") + 1] == "raster.fc_block"
            assert argv[argv.index("--baseline") + 1] == f"{ckpt}:stroke.fc"
            i = argv.index("--fuse")
            assert argv[i + 1:i + 3] == [f"{ckpt}:raster.fc_block", f"{ckpt}:stroke.fc"]
            assert tail(argv) == tail(paper_eval.argv)  # the same probe recipe


def test_the_sgd_control_trains_tcn_rotation_as_the_paired_runs_train_their_tcn(tmp_path):
    steps = study.plan(tmp_path, "cpu", "q")
    s = study.SCALES["cpu"]
    control = [st for st in steps if st.key.startswith(f"train-{study.SGD_CONTROL}-")]
    assert [st.key for st in control] == [f"train-{study.SGD_CONTROL}-seed{n}" for n in s["dual_seeds"]]
    for st in control:
        seed = study.seed_of(st)
        paired = load_config("dual_crossmodal", overrides_from_args(
            train_parser("dual").parse_args(next(p for p in steps if p.key == f"train-dual_crossmodal-seed{seed}").argv[1:])))
        cfg = load_config("tcn_rotation", overrides_from_args(train_parser("tcn").parse_args(st.argv[1:])))
        assert st.argv[:3] == ["train_tcn.py", "--exp", "tcn_rotation"] and cfg.train.seed == seed
        assert cfg.optim == paired.optim  # SGD Nesterov 0.9, wd 5e-4, the CNN's shortened schedule
        assert (cfg.train.epochs, cfg.train.batch_size) == (paired.train.epochs, paired.train.batch_size) == (4, 64)
        # Its own run folder: never the study's tcn_rotation run of the same seed.
        alone = next(p for p in steps if p.key == f"train-tcn_rotation-seed{seed}")
        assert st.run_dir != alone.run_dir and st.run_dir == Path(cfg.train.out) / "tcn_rotation"
        ev = next(p for p in steps if p.key == f"eval-{study.SGD_CONTROL}-seed{seed}")
        assert ev.rows == [study.SGD_CONTROL] and ev.argv[ev.argv.index("--ckpt") + 1] == str(st.run_dir / "best.pt")


def test_crossmodal_claims_compare_with_the_paper_and_generic_dual_branches():
    res = _res(fuse_dual=[0.30, 0.31, 0.32], fuse_dual_simclr=[0.20, 0.20, 0.20], fuse_dual_byol=[0.25, 0.25, 0.25],
               fuse_dual_autoencoder=[0.10, 0.10, 0.10],
               fuse_dual_crossmodal=[0.40, 0.41, 0.42],  # beats both by more than the spread
               fuse_dual_crossmodal_rotation=[0.30, 0.305, 0.31],  # 30.5 vs 31: does not hold
               dual_crossmodal_raster=[0.05, 0.05, 0.05], cnn_rotation=[0.06, 0.06, 0.06],
               dual_crossmodal_stroke=[0.05, 0.05, 0.05], tcn_rotation=[0.04, 0.04, 0.04],
               tcn_rotation_sgd=[0.05, 0.051, 0.052])  # 5.0 vs 5.1: does not hold
    got = {c: v for c, _, v in study.crossmodal_claims(res)}
    assert got == {
        "pretraining together (fuse_dual_crossmodal) beats fusing separately trained branches "
        "(fuse_dual, the paper's dual branch)": "holds",
        "fuse_dual_crossmodal beats the best generic dual branch (fuse_dual_byol)": "holds",
        "dual_crossmodal_raster beats the same encoder trained alone (cnn_rotation)": "does not hold",
        "dual_crossmodal_stroke beats the same encoder trained alone (tcn_rotation)": "holds",
        "dual_crossmodal_stroke beats the same encoder trained alone with the same optimiser (tcn_rotation_sgd)":
            "does not hold",
        "pretraining together (fuse_dual_crossmodal_rotation) beats fusing separately trained branches "
        "(fuse_dual, the paper's dual branch)": "does not hold",
        "fuse_dual_crossmodal_rotation beats the best generic dual branch (fuse_dual_byol)": "holds",
    }
    assert study.crossmodal_claims(_res(fuse_dual=[0.3])) == []  # no cross-modal rows yet: no claim


def test_generic_claims_per_branch_follow_the_rule():
    res = _res(cnn_rotation=[0.30, 0.31, 0.32], cnn_deform=[0.20, 0.20, 0.20],
               cnn_simclr=[0.20, 0.21, 0.22],  # 31 vs 21, sd 1: holds
               cnn_byol=[0.30, 0.305, 0.31],  # 31 vs 30.5: within spread
               cnn_autoencoder=[0.10, 0.10, 0.10],
               tcn_rotation=[0.10, 0.10, 0.10], tcn_deform=[0.12, 0.12, 0.12],  # deformation is the better task
               tcn_simclr=[0.15, 0.15, 0.15], tcn_byol=[0.05, 0.05, 0.05],
               fuse_dual=[0.40, 0.40, 0.40], fuse_dual_simclr=[0.35, 0.35, 0.35], fuse_dual_byol=[0.41, 0.41, 0.41])
    claims = {c: (e, v) for c, e, v in study.generic_claims(res)}
    assert claims["CNN: sketch-specific (cnn_rotation) beats generic cnn_simclr"] == ("31.00 vs 21.00", "holds")
    assert claims["CNN: sketch-specific (cnn_rotation) beats generic cnn_byol"][1] == "holds, within seed spread"
    assert claims["CNN: sketch-specific beats every generic method"][1] == "holds, within seed spread of cnn_byol"
    assert claims["TCN: sketch-specific (tcn_deform) beats generic tcn_simclr"] == ("12.00 vs 15.00", "does not hold")
    assert claims["TCN: sketch-specific beats every generic method"] == (
        "tcn_deform 12.00; best generic tcn_simclr 15.00", "does not hold (tcn_simclr 15.00 win)")
    assert claims["paper's dual branch (fuse_dual) beats the best generic dual branch (fuse_dual_byol)"] == (
        "40.00 vs 41.00", "does not hold")


def _write_eval(path: Path, values: list[tuple[float, float, float | None]]) -> None:
    rows = [{"model": f"m{i}", "mAP": a, "P@10": p, **({"probe": {"top1": t}} if t is not None else {})}
            for i, (a, p, t) in enumerate(values)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"results": rows}))


def test_collect_maps_rows_by_position_and_seed(tmp_path):
    steps = [study.Step("eval-tcn-seed1", "eval", ["eval_retrieval.py", "--json", str(tmp_path / "a.json")],
                        rows=["tcn_rotation", "random_tcn"]),
             study.Step("eval-cnn-seed2", "eval", ["eval_retrieval.py", "--json", str(tmp_path / "b.json")],
                        rows=["cnn_rotation"])]
    _write_eval(tmp_path / "a.json", [(0.5, 0.4, 0.3), (0.2, 0.1, None)])
    _write_eval(tmp_path / "b.json", [(0.6, 0.5, 0.4)])
    res = study.collect(steps)
    assert res["tcn_rotation"] == {"mAP": [[1, 0.5]], "P@10": [[1, 0.4]], "top1": [[1, 0.3]], "knn": [[1, None]]}
    assert res["random_tcn"]["top1"] == [[1, None]]
    assert res["cnn_rotation"]["mAP"] == [[2, 0.6]]
    _write_eval(tmp_path / "b.json", [(0.6, 0.5, 0.4), (0.1, 0.1, 0.1)])
    with pytest.raises(SystemExit, match="2 rows, expected 1"):
        study.collect(steps)


def test_stats_and_format_are_mean_and_sample_sd():
    mean, sd, n = study.stats([[0, 0.10], [1, 0.20], [2, 0.30]])
    assert (round(mean, 12), round(sd, 12), n) == (0.2, 0.1, 3)
    assert study.fmt([[0, 0.10], [1, 0.20], [2, 0.30]]) == "20.00 ± 10.00"
    assert study.fmt([[0, 0.1234]]) == "12.34"
    assert study.fmt([[0, None]]) == "-"
    assert math.isnan(study.stats([])[0])


def _res(**maps: list[float]) -> dict:
    return {rid: {"mAP": [[i, v] for i, v in enumerate(vals)]} for rid, vals in maps.items()}


def test_claim_verdicts_follow_the_stated_rule():
    res = _res(random_tcn=[0.10, 0.12, 0.14], tcn_rotation=[0.20, 0.21, 0.22],  # +0.09 > sd 0.02: holds
               tcn_deform=[0.12, 0.13, 0.14],  # +0.01 < sd 0.02: within spread
               random_alexnet=[0.30], cnn_rotation=[0.25],  # lower: does not hold
               fuse_dual=[0.26, 0.27, 0.28], random_fuse_dual=[0.2, 0.2, 0.2],
               cnn_supervised=[0.40], tcn_supervised=[0.30, 0.30, 0.30], fuse_dual_supervised=[0.35, 0.35, 0.35],
               cnn_deform=[0.2], fuse_cnn_rot_deform=[0.3], fuse_tcn_rot_deform=[0.215, 0.215, 0.215])
    verdicts = {c: (e, v) for c, e, v in study.claims(res)}
    assert verdicts["tcn_rotation beats random_tcn (retrieval mAP)"][1] == "holds"
    assert verdicts["tcn_deform beats random_tcn (retrieval mAP)"][1] == "holds, within seed spread"
    assert verdicts["cnn_rotation beats random_alexnet (retrieval mAP)"][1] == "does not hold"
    # best single branch: cnn_rotation 0.25 vs tcn_rotation 0.21 -> cnn_rotation; 0.27 > 0.25 + 0.01
    assert verdicts["dual branch (fuse_dual) beats its best single branch"] == ("27.00 vs cnn_rotation 25.00", "holds")
    assert verdicts["fuse_cnn_rot_deform beats its best part"][1] == "holds (one seed: spread unknown)"
    assert verdicts["fuse_tcn_rot_deform beats its best part"][1] == "holds, within seed spread"
    # best supervised branch: cnn_supervised 0.40; gap from cnn_rotation 15 points, from fuse_dual 13
    ev, v = verdicts["fusion narrows the gap to the best supervised branch (cnn_supervised)"]
    assert v == "holds" and "gap 15.00 points from cnn_rotation, 13.00 from fuse_dual" == ev
    # same fusion supervised: 0.35 - 0.27 = 8 points (< 15); 27/35 = 77% of supervised (> 25/40 = 62%)
    ev, v = verdicts["fusion narrows the gap to a supervised model fused the same way"]
    assert v == "holds in points, holds as a fraction"
    assert "gap 15.00 points, 62% of supervised" in ev and "gap 8.00 points, 77%" in ev
    res["fuse_dual_supervised"]["mAP"] = [[0, 0.45], [1, 0.45], [2, 0.45]]  # gap 18 points, 60%
    verdicts = {c: v for c, _, v in study.claims(res)}
    assert verdicts["fusion narrows the gap to a supervised model fused the same way"] == (
        "does not hold in points, does not hold as a fraction")


def test_compare_flags_only_rows_that_moved_beyond_tolerance():
    # Trained rows: max(3 sd, 1 point); random-init retrieval rows: 0.05 points.
    old = {"a": {"mAP": [[0, 0.30], [1, 0.32], [2, 0.34]]}, "b": {"mAP": [[0, 0.50]]},
           "random_x": {"mAP": [[0, 0.04]], "top1": [[0, 0.10]]}}
    same = {"a": {"mAP": [[0, 0.31], [1, 0.33], [2, 0.35]]}, "b": {"mAP": [[0, 0.509]]},
            "random_x": {"mAP": [[0, 0.0404]], "top1": [[0, 0.109]]}}
    assert study.compare(same, old) == []  # a: 1 < 6 points (3 sd); b: 0.9 < 1; random: 0.04 < 0.05
    moved = {"a": {"mAP": [[0, 0.30], [1, 0.32], [2, 0.34]]}, "b": {"mAP": [[0, 0.512]]},
             "random_x": {"mAP": [[0, 0.0406]], "top1": [[0, 0.109]]}}
    assert study.compare(moved, old) == ["b mAP: 50.00 -> 51.20 (tolerance 1.00)",
                                         "random_x mAP: 4.00 -> 4.06 (tolerance 0.05)"]
    assert study.compare({}, {"b": {"mAP": [[0, 0.5]]}}) == ["b mAP: missing in the new results"]


def test_document_sections_are_replaced_between_markers_only():
    text = "intro\n<!-- t:begin -->\nold\n<!-- t:end -->\noutro\n"
    assert study.replace_between(text, "t", "new") == "intro\n<!-- t:begin -->\nnew\n<!-- t:end -->\noutro\n"
    with pytest.raises(SystemExit, match="markers"):
        study.replace_between("no markers", "t", "x")
    doc = study.DOC.read_text()
    for name in ("study-table", "study-commands"):
        assert f"<!-- {name}:begin -->" in doc and f"<!-- {name}:end -->" in doc


def test_the_documented_command_list_is_what_dry_run_prints():
    # docs/REPRODUCTION.md says its command list is `--dry-run`'s output: a method or row
    # added to the plan without regenerating the list fails here.
    doc = study.DOC.read_text()
    listed = doc.split("<!-- study-commands:begin -->\n", 1)[1].split("\n<!-- study-commands:end -->", 1)[0]
    assert listed == study.commands_markdown(study.plan(Path("study"), "cpu", "../shared/quickdraw"))


def test_an_existing_store_is_reused_only_for_the_same_prepare_command(tmp_path, capsys):
    work = tmp_path / "work"
    (work / "store").mkdir(parents=True)
    (work / "store" / "meta.json").write_text("{}")
    step = study.plan(work, "smoke", "q")[0]
    assert step.kind == "prepare"
    study.execute([step], work, {})  # no marker yet: kept, and the command recorded
    assert "store exists, kept" in capsys.readouterr().out
    assert (work / "prepare.cmd").read_text() == step.shell()
    study.execute([step], work, {})  # same command: kept again
    other = study.plan(work, "cpu", "q")[0]
    with pytest.raises(SystemExit, match="prepared by another command"):
        study.execute([other], work, {})


def test_the_knn_column_appears_only_when_the_evaluation_reports_it():
    res = {"tcn_rotation": {"mAP": [[0, 0.5]], "P@10": [[0, 0.4]], "top1": [[0, 0.3]], "knn": [[0, None]]}}
    header = study.table_markdown(res, [], {}, "cpu").splitlines()[0]
    assert header == "| row | encoder | seeds | mAP (%) | P@10 (%) | probe top-1 (%) |"
    res["tcn_rotation"]["knn"] = [[0, 0.25]]
    lines = study.table_markdown(res, [], {}, "cpu").splitlines()
    assert lines[0].endswith("| probe top-1 (%) | kNN top-1 (%) |") and lines[2].endswith("| 30.00 | 25.00 |")


def test_a_partial_study_selects_prepare_and_the_matching_steps_of_its_seeds(tmp_path):
    steps = study.plan(tmp_path, "smoke", "q")
    chosen = study.select(steps, r"^(train-(cnn|tcn)_rotation-|train-dual|eval-dual)", [0])
    assert [st.key for st in chosen] == [
        "prepare", "train-cnn_rotation-seed0", "train-tcn_rotation-seed0", "train-dual_crossmodal-seed0",
        "train-dual_crossmodal_rotation-seed0", "eval-dual-seed0", "eval-dual_crossmodal-seed0",
        "eval-dual_crossmodal_rotation-seed0"]
    assert chosen[1] is next(st for st in steps if st.key == "train-cnn_rotation-seed0")  # steps unchanged
    assert [st.key for st in study.select(steps, None, [1]) if st.kind == "train"][:2] == [
        "train-cnn_rotation-seed1", "train-cnn_deform-seed1"]
    assert study.select(steps) == steps


def test_a_partial_study_refuses_an_evaluation_whose_checkpoints_it_would_not_have(tmp_path):
    steps = study.plan(tmp_path, "smoke", "q")
    with pytest.raises(SystemExit, match=r"eval-dual-seed0 reads .*seed0/cnn_rotation/best.pt.*"
                                         r"add train-cnn_rotation-seed0 to --only"):
        study.select(steps, "^(train-tcn_rotation|eval-dual-seed)", [0])
    # A part's checkpoint (path:layer) is a dependency too.
    with pytest.raises(SystemExit, match="dual_crossmodal/best.pt"):
        study.select(steps, "^eval-dual_crossmodal-", [0])
    for exp in ("cnn_rotation", "tcn_rotation"):  # trained earlier: the evaluation alone is fine
        (tmp_path / "runs" / "seed0" / exp).mkdir(parents=True)
        (tmp_path / "runs" / "seed0" / exp / "best.pt").write_bytes(b"")
    assert [st.key for st in study.select(steps, "^eval-dual-seed", [0])] == ["prepare", "eval-dual-seed0"]
    with pytest.raises(SystemExit, match="no step matches"):
        study.select(steps, "no-such-step")


def test_a_partial_check_compares_the_rows_and_seeds_it_has():
    old = {"a": {"mAP": [[0, 0.30], [1, 0.50]]}, "b": {"mAP": [[0, 0.50]]}}
    new = {"a": {"mAP": [[0, 0.305]]}}  # seed 0 only: compared with old seed 0 (0.30), not the mean (0.40)
    assert study.compare(new, old, partial=True) == []
    # Whole: a is within its spread over both seeds (9.5 < 3 x 14.14 points), b is missing.
    assert study.compare(new, old) == ["b mAP: missing in the new results"]
    assert study.compare({"a": {"mAP": [[0, 0.32]]}}, old, partial=True) == ["a mAP: 30.00 -> 32.00 (tolerance 1.00)"]


def test_a_partial_table_leaves_the_document_and_the_full_results_alone(tmp_path, monkeypatch, capsys):
    doc, committed = tmp_path / "REPRODUCTION.md", tmp_path / "results.json"
    doc.write_text("<!-- study-table:begin -->\nold\n<!-- study-table:end -->\n")
    committed.write_text('{"rows": {}}\n')
    monkeypatch.setattr(study, "DOC", doc)
    monkeypatch.setattr(study, "COMMITTED", committed)
    monkeypatch.setattr(study, "ROOT", tmp_path)
    work = tmp_path / "work"
    for exp in ("cnn_rotation", "tcn_rotation"):
        (work / "runs" / "seed0" / exp).mkdir(parents=True)
        (work / "runs" / "seed0" / exp / "best.pt").write_bytes(b"")
    (work / "results").mkdir()
    _write_eval(work / "results" / "eval-dual-seed0.json", [(0.075, 0.07, 0.22), (0.055, 0.05, 0.15)])
    assert study.main(["--work", str(work), "--table-only", "--seeds", "0", "--only", "^eval-dual-seed"]) == 0
    out = capsys.readouterr().out
    assert "| `fuse_dual` |" in out and "| 7.50 |" in out and "a partial study (2 steps)" in out
    assert "over the seeds a row has: the seeds its column gives (a partial study)" in out
    note = study.table_markdown({}, [], {}, "cpu")  # the whole study's note names what it left out
    assert "TCN runs seeds 0, 1, 2" in note and "generic baselines seed 0 (CNN)" in note
    assert "ResNet-18 runs none (left out at this scale), dilated TCN runs none (left out at this scale)" in note
    rows = json.loads((work / "results-partial.json").read_text())["rows"]
    assert sorted(rows) == ["fuse_dual", "random_fuse_dual"] and rows["fuse_dual"]["mAP"] == [[0, 0.075]]
    assert not (work / "results.json").exists()
    assert "old" in doc.read_text() and committed.read_text() == '{"rows": {}}\n'
