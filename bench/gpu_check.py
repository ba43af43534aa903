"""One command that checks a CUDA machine for this project and measures it, in about 6 minutes.

On the GPU box (no network needed; the project's requirements installed), from the checkout:

    python bench/gpu_check.py --out $OUT/gpu_check 2>&1          # full check, ~5-7 min on one H200
    python bench/gpu_check.py --out DIR --quick                   # ~3 min: fewer steps, no compile rows
    python bench/gpu_check.py --out DIR --only train_cnn eval     # rerun some parts (preflight always runs)
    python bench/gpu_check.py --out DIR --device cpu              # dry run on the CPU, tiny sizes (~40 s on 2 cores)

(``SKETCH_TEST_DEVICE=cpu`` selects the CPU dry run too, as it does for tests/engine/test_cuda.py.)
Through the device tool: ``python bench/gpu_check.py --out $OUT/gpu_check 2>&1`` with a
timeout_s of about 540; no ``| tail`` (the tool keeps the end of the output, and a pipeline
stopped at the limit returns nothing). Everything printed also goes to
``OUT/gpu_check.log``, so the folder that comes back holds the whole story in three files.

Parts, in order; each runs in its own process (``--run-part``) or as a command, with a time
cap, so a part that fails, hangs or crashes CUDA is recorded (status, seconds, error) and the
next one still runs:

1. ``preflight``: Python, torch / CUDA / cuDNN versions, GPU name, total and free memory, CPU
   count, /dev/shm, the project's requirements and entry points import, one bf16 matrix
   product and one cuDNN convolution on the device. A broken environment (no CUDA, torch or
   the project not importable, a failing kernel) stops the check here, in seconds (exit 2).
2. ``test_cuda``: ``pytest tests/engine/test_cuda.py`` (passed / failed / skipped and failing names).
3. ``store``: synthetic sketches written as Quick, Draw! simplified ndjson and packed by
   ``python -m data.prepare`` into a store, so that training reads sketches the way it reads
   real data (the built-in generator costs ~1.8 ms a sketch with its 224 px render on one
   core, ten times a store read + render, and would make every loader look slow;
   ``--source generator`` uses it).
4. ``bench_gpu``: ``bench/bench_gpu.py`` (AlexNet-BN and ResNet; fp32, bf16, bf16 +
   channels_last; model alone against the GPU's peak, and end to end with the real loader,
   --workers processes, on the store); its JSON is kept.
5. ``train_cnn``, ``train_tcn``: ``cnn_rotation`` and ``tcn_rotation`` as configured (batch
   256 / 512 sketches, 224 px rasters / 100 x 4 strokes) with the speed switches on
   (train.amp=bf16, train.channels_last for the CNN, --workers loader processes, pinned
   memory, persistent workers, cuDNN benchmark), one epoch of warm-up + timed steps through
   the trainer's own ``fit()``; sketches/s and inputs/s over the timed steps, the share of
   step time spent waiting for the loader (the device is synchronised before each batch is
   asked for, so compute never leaks into the wait), peak GPU memory (allocated / reserved),
   and the same step on one batch already on the device ("model alone").
6. ``eval``: ``eval_retrieval.py`` on the trained CNN checkpoint: features of a few thousand
   query + gallery sketches, then the full ranking (mAP), each timed.
7. ``bench_gpu_compile``: ``bench_gpu.py --compile --models alexnet`` (the torch.compile rows),
   last, in whatever time the budget has left (GPU only; not with --quick).

Outputs in --out: ``gpu_check.json`` (everything, rewritten after every part),
``gpu_check.md`` (tables: machine, command, one line per part, then the figures) and
``gpu_check.log``. Exit status: 0 when every part passed (or was skipped by design), 1 when
a part failed, timed out or could not run, 2 when the preflight found a broken environment.
The parent process uses the standard library only, so it reports even when torch does not import.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
EXPERIMENTS = {"train_cnn": "cnn_rotation", "train_tcn": "tcn_rotation"}
PREFETCH = 2  # torch's DataLoader default (train.prefetch_factor None): batches in flight per worker
OK, FAILED, TIMEOUT, SKIPPED, NOT_RUN = "ok", "failed", "timeout", "skipped", "not run"
STATUSES = (OK, FAILED, TIMEOUT, SKIPPED, NOT_RUN)
MIN_PART_S = 15  # a part is not started with less budget than this left


# ============================================================================ the plan
@dataclass
class Plan:
    """Sizes and switches of one check; written to the spec file every child part reads."""

    device: str  # "cuda", "cuda:N" or "cpu" (the CPU dry run)
    quick: bool
    workers: int  # loader processes (training, bench_gpu end to end, feature extraction)
    warmup: int  # training steps before timing, plus 2 x workers (the loader's queue)
    steps: int  # timed training steps
    model_steps: int  # timed steps of the model-alone measurement (after 3 warm-up steps)
    source: str  # "store" (synthetic sketches in a prepared store) or "generator"
    classes: int  # synthetic classes
    val_per_class: int
    query_per_class: int
    gallery_per_class: int
    batch: dict = field(default_factory=dict)  # experiment -> sketches per step (dry run only)
    # experiment -> config overrides (dry run only: a narrow ResNet stands in for AlexNet-BN,
    # whose 57 M parameters make one CPU step and checkpoint take seconds)
    overrides: dict = field(default_factory=dict)
    image_size: int | None = None  # dry run only
    bench_args: list = field(default_factory=list)
    bench_compile_args: list = field(default_factory=list)
    pytest_k: str | None = None
    seed: int = 0
    fail: list = field(default_factory=list)  # parts made to raise (--fail, for the tests)
    work: str = ""  # scratch folder (checkpoints, store, raw outputs): never the --out folder
    store: str | None = None  # set once the store part has built it

    @property
    def dry(self) -> bool:
        return self.device == "cpu"

    @property
    def warm_steps(self) -> int:
        return self.warmup + PREFETCH * self.workers


def make_plan(args: argparse.Namespace, work: Path) -> Plan:
    if args.device == "cpu":  # the dry run: every part, tiny sizes
        workers = 1 if args.workers is None else args.workers
        return Plan(device="cpu", quick=args.quick, workers=workers, warmup=1, steps=args.steps or 2,
                    model_steps=2, source=args.source, classes=4, val_per_class=2, query_per_class=2,
                    gallery_per_class=4, batch={"cnn_rotation": 4, "tcn_rotation": 8}, image_size=64,
                    overrides={"cnn_rotation": {"model.name": "resnet", "eval.feature": "pool",
                                                "model.params": {"widths": [8, 16, 16, 16], "blocks": [1, 1, 1, 1]}}},
                    bench_args=["--batch", "2", "--warmup", "1", "--steps", "1", "--e2e-steps", "2",
                                "--image-size", "64", "--workers", "0", "--models", "resnet"],
                    pytest_k=args.pytest_k or "test_views_on_the_device_equal_the_cpu_views and raster and rotation",
                    fail=list(args.fail), work=str(work))
    workers = 16 if args.workers is None else args.workers
    bench = ["--workers", str(workers)] + (["--steps", "20", "--e2e-steps", "40"] if args.quick else [])
    return Plan(device=args.device, quick=args.quick, workers=workers, warmup=10,
                steps=args.steps or (30 if args.quick else 60), model_steps=15 if args.quick else 30,
                source=args.source, classes=12, val_per_class=10, query_per_class=25 if args.quick else 50,
                gallery_per_class=125 if args.quick else 250, bench_args=bench,
                bench_compile_args=["--compile", "--models", "alexnet", "--workers", str(workers)],
                pytest_k=args.pytest_k, fail=list(args.fail), work=str(work))


# ============================================================================ output
class Console:
    """Prints to stdout and appends the same lines to the log file."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._fh = open(log_path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            print(text, flush=True)
            self._fh.write(text + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def err_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def fmt(value, spec: str = ".1f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# ============================================================================ running parts
class PartError(RuntimeError):
    """A part that ran and did not succeed; ``data`` keeps what it produced before that."""

    def __init__(self, message: str, data: dict | None = None, status: str = FAILED) -> None:
        super().__init__(message)
        self.data = data or {}
        self.status = status


@dataclass
class Part:
    name: str
    run: Callable[["Check", float], dict]  # (check, timeout s) -> figures; raises on failure
    cap_s: float  # time cap on the GPU (the dry run has its own, CPU_CAP_S)
    needs: tuple = ()  # parts that must have passed first
    why_skip: Callable[["Check"], str | None] = lambda check: None  # a reason to skip by design
    fatal: bool = False  # a failure stops the check (the preflight)


CPU_CAP_S = 120.0


@dataclass
class Check:
    """One run of the check: the plan, where things go, and the summary written after every part."""

    plan: Plan
    out: Path
    console: Console
    budget_s: float
    summary: dict
    t0: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def record(self, name: str, rec: dict) -> None:
        self.summary["parts"][name] = rec
        self.save()

    def save(self) -> None:
        self.summary["seconds"] = round(time.monotonic() - self.t0, 1)
        write_atomic(self.out / "gpu_check.json", json.dumps(self.summary, indent=2, default=str) + "\n")
        write_atomic(self.out / "gpu_check.md", markdown(self.summary))


def run_part(check: Check, part: Part) -> dict:
    """Run one part under its guard: whatever it raises becomes a failed record."""
    reason = part.why_skip(check)
    if reason:
        return {"status": SKIPPED, "reason": reason}
    missing = [n for n in part.needs if check.summary["parts"].get(n, {}).get("status") != OK]
    if missing:
        return {"status": NOT_RUN, "reason": f"needs {', '.join(missing)}, which did not pass"}
    left = check.left()
    if left < MIN_PART_S:
        return {"status": NOT_RUN, "reason": f"time budget spent ({check.budget_s:.0f} s; --budget-s)"}
    cap = min(part.cap_s if not check.plan.dry else CPU_CAP_S, left)
    check.console.line(f"== {part.name} (at most {cap:.0f} s) ==")
    t0 = time.monotonic()
    try:
        if part.name in check.plan.fail and part.name not in PYTHON_PARTS:
            raise RuntimeError(f"injected failure in part {part.name} (--fail)")
        rec = {"status": OK, **part.run(check, cap)}
    except PartError as err:
        rec = {"status": err.status, "error": str(err), **err.data}
    except Exception as err:  # noqa: BLE001 - one part's failure must not stop the others
        check.console.line(traceback.format_exc().rstrip())
        rec = {"status": FAILED, "error": err_line(err)}
    rec["seconds"] = round(time.monotonic() - t0, 2)
    # A fatal part that failed, hung or crashed stops the check, unless it only reported
    # problems that leave the other parts able to run (a missing optional package, say).
    if part.fatal and rec["status"] != OK and not rec.get("problems"):
        rec["fatal"] = True
    check.console.line(f"== {part.name}: {rec['status']} in {rec['seconds']:.1f} s"
                       + (f": {rec['error']}" if rec.get("error") else ""))
    return rec


def run_parts(check: Check, parts: list[Part]) -> None:
    """Run the parts in order, each under its guard; after a fatal failure the rest are not run."""
    stop: str | None = None
    for part in parts:
        if stop:
            check.record(part.name, {"status": NOT_RUN, "reason": stop})
            continue
        rec = run_part(check, part)
        if part.name == "preflight" and "torch" in rec:
            check.summary["machine"].update({k: v for k, v in rec.items() if k not in ("status", "seconds", "fatal")})
        if part.name == "store" and rec["status"] == OK:
            check.plan.store = rec["store"]  # the later parts read it
            check.summary["plan"]["store"] = rec["store"]
        if rec.get("fatal"):
            stop = f"the {part.name} failed: {rec.get('error')}"
        check.record(part.name, rec)


def run_command(check: Check, name: str, cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``cmd`` in the checkout in its own process group, stream its output (prefixed) to
    the console and log, and kill the whole group at ``timeout``. Returns rc, timed_out and the
    last lines of output."""
    check.console.line(f"$ {shlex.join(cmd)}")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
    tail: collections.deque = collections.deque(maxlen=40)

    def pump() -> None:
        for raw in proc.stdout:
            text = raw.rstrip("\n")
            for piece in text.split("\r"):  # progress bars redraw with \r
                if piece.strip():
                    tail.append(piece)
                    check.console.line(f"[{name}] {piece}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
    except BaseException:  # Ctrl-C: take the child's whole group down with us
        kill_group(proc)
        raise
    reader.join(timeout=10)
    return {"rc": proc.returncode, "timed_out": timed_out, "tail": list(tail)}


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group this script started for ``proc``."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def last_error(tail: list[str]) -> str:
    """The most telling line of a failed command's output: the last 'SomethingError: ...' line,
    else the last line."""
    for text in reversed(tail):
        head = text.strip().split(":", 1)[0]
        if head.endswith(("Error", "Exception")) or text.strip().startswith("error:"):
            return text.strip()
    return tail[-1].strip() if tail else "no output"


# ---------------------------------------------------------------------------- child parts
PYTHON_PARTS = ("preflight", "store", "train_cnn", "train_tcn")


def python_part(name: str) -> Callable[[Check, float], dict]:
    """A part run as ``python bench/gpu_check.py --run-part NAME`` in its own process: CUDA
    state, memory peaks and crashes stay there, and a hang is cut off at the time cap."""

    def run(check: Check, timeout: float) -> dict:
        work = Path(check.plan.work)
        spec, result = work / "plan.json", work / f"{name}.result.json"
        write_atomic(spec, json.dumps(asdict(check.plan), indent=2) + "\n")
        result.unlink(missing_ok=True)
        cmd = [sys.executable, str(SCRIPT.relative_to(ROOT)), "--run-part", name, "--spec", str(spec),
               "--result", str(result)]
        ran = run_command(check, name, cmd, timeout)
        data = json.loads(result.read_text()) if result.exists() else None
        if data is not None and data.get("status") == OK:
            data.pop("status")
            if ran["timed_out"]:  # finished its work, then hung on the way out (e.g. loader workers)
                data["note"] = f"the process did not exit by itself after its result ({timeout:.0f} s); killed"
            return data
        if data is not None:  # the child caught its own error
            raise PartError(data.get("error", "failed"), {k: v for k, v in data.items() if k not in ("status", "error")})
        if ran["timed_out"]:
            raise PartError(f"stopped at its time cap of {timeout:.0f} s", {"output_tail": ran["tail"][-10:]}, TIMEOUT)
        raise PartError(f"exit status {ran['rc']}: {last_error(ran['tail'])}", {"output_tail": ran["tail"][-10:]})

    return run


# ---------------------------------------------------------------------------- command parts
def parse_junit(path: Path) -> dict:
    """pytest's --junitxml report -> passed, failed, skipped counts and the failing test names."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures: list[str] = []
    for case in root.iter("testcase"):
        name = "::".join(x for x in (case.get("classname", ""), case.get("name", "")) if x)
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            counts["failed"] += 1
            failures.append(name)
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures}


def run_test_cuda(check: Check, timeout: float) -> dict:
    if importlib.util.find_spec("pytest") is None:
        raise PartError(f"pytest is not installed for {sys.executable}: tests/engine/test_cuda.py was not run "
                        "(install requirements-test.txt, or carry a pytest wheel to this machine)", status=NOT_RUN)
    junit = Path(check.plan.work) / "test_cuda.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/engine/test_cuda.py", f"--junitxml={junit}"]
    if check.plan.pytest_k:
        cmd += ["-k", check.plan.pytest_k]
    ran = run_command(check, "test_cuda", cmd, timeout, env={"SKETCH_TEST_DEVICE": check.plan.device})
    data = parse_junit(junit) if junit.exists() else {}
    data["pytest_k"] = check.plan.pytest_k
    if ran["timed_out"]:
        raise PartError(f"stopped at its time cap of {timeout:.0f} s", data, TIMEOUT)
    if not data:
        raise PartError(f"pytest exit status {ran['rc']} and no report: {last_error(ran['tail'])}")
    if ran["rc"] != 0 or data["failed"]:
        names = ", ".join(data["failures"][:5]) or last_error(ran["tail"])
        raise PartError(f"{data['failed']} failed (pytest exit status {ran['rc']}): {names}", data)
    if data["passed"] == 0:
        raise PartError("no test passed (all skipped: no CUDA device seen by pytest?)", data)
    return data


def bench_part(compile_rows: bool) -> Callable[[Check, float], dict]:
    def run(check: Check, timeout: float) -> dict:
        plan = check.plan
        out = Path(plan.work) / ("bench_gpu_compile.json" if compile_rows else "bench_gpu.json")
        out.unlink(missing_ok=True)
        args = plan.bench_compile_args if compile_rows else plan.bench_args
        store = ["--store", plan.store] if plan.store else []
        cmd = [sys.executable, "bench/bench_gpu.py", "--device", plan.device, *args, *store, "--out-json", str(out)]
        ran = run_command(check, "bench_gpu_compile" if compile_rows else "bench_gpu", cmd, timeout)
        report = json.loads(out.read_text()) if out.exists() else None
        data = {"report": report, "source": "store" if plan.store else "generator"}
        if ran["timed_out"]:
            raise PartError(f"stopped at its time cap of {timeout:.0f} s (rows measured so far are kept)", data,
                            TIMEOUT)
        if report is None:
            raise PartError(f"exit status {ran['rc']}, no JSON: {last_error(ran['tail'])}", data)
        bad = [f"{r.get('model', r.get('experiment'))} {r['mode']}: {r['error']}"
               for r in report.get("model_rows", []) + report.get("e2e_rows", []) if "error" in r]
        if ran["rc"] != 0 or bad:
            raise PartError(f"exit status {ran['rc']}; " + ("; ".join(bad) or last_error(ran["tail"])), data)
        return data

    return run


def read_eval_report(path: Path) -> dict:
    """The figures of eval_retrieval.py's JSON (its first row: the checkpoint itself)."""
    payload = json.loads(path.read_text())
    row = payload["results"][0]
    secs = row.get("seconds", {})
    return {"model": row["model"], "layer": row["layer"], "feature_dim": row["feature_dim"], "metric": row["metric"],
            "mAP": row["mAP"], "precision": {k: v for k, v in row.items() if k.startswith("P@")},
            "num_queries": row["num_queries"], "gallery_size": row["gallery_size"],
            "features_s": secs.get("features"), "ranking_s": secs.get("ranking")}


def run_eval(check: Check, timeout: float) -> dict:
    plan = check.plan
    ckpt = check.summary["parts"]["train_cnn"]["checkpoint"]
    out = Path(plan.work) / "eval" / "retrieval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "eval_retrieval.py", "--ckpt", ckpt, "--json", str(out), "--no-pictures", "--no-cache",
           "--no-progress", "--device", plan.device, "--set", f"train.workers={plan.workers}"]
    if not plan.store:  # from the built-in generator: say how many sketches (a store fixes its own)
        cmd += ["--set", f"data.query_per_class={plan.query_per_class}",
                "--set", f"data.gallery_per_class={plan.gallery_per_class}"]
    t0 = time.monotonic()
    ran = run_command(check, "eval", cmd, timeout)
    wall = time.monotonic() - t0
    if ran["timed_out"]:
        raise PartError(f"stopped at its time cap of {timeout:.0f} s", status=TIMEOUT)
    if ran["rc"] != 0 or not out.exists():
        raise PartError(f"exit status {ran['rc']}: {last_error(ran['tail'])}")
    data = read_eval_report(out)
    n = data["num_queries"] + data["gallery_size"]
    data.update(checkpoint=ckpt, sketches=n, wall_s=round(wall, 2),
                features_per_s=n / data["features_s"] if data["features_s"] else None,
                source="store" if plan.store else "generator")
    return data


# ---------------------------------------------------------------------------- the parts table
def _no_compile(check: Check) -> str | None:
    if check.plan.dry:
        return "CPU dry run: bench_gpu runs fp32 rows only on the CPU, so compile rows do not exist there"
    if check.plan.quick:
        return "--quick"
    return None


PARTS: list[Part] = [
    Part("preflight", python_part("preflight"), 90, fatal=True),
    Part("test_cuda", run_test_cuda, 180),
    Part("store", python_part("store"), 90,
         why_skip=lambda c: "--source generator" if c.plan.source != "store" else None),
    Part("bench_gpu", bench_part(False), 150),
    Part("train_cnn", python_part("train_cnn"), 120),
    Part("train_tcn", python_part("train_tcn"), 120),
    Part("eval", run_eval, 90, needs=("train_cnn",)),
    Part("bench_gpu_compile", bench_part(True), 240, why_skip=_no_compile),
]
PART_NAMES = [p.name for p in PARTS]


# ============================================================================ child side
def _spec(path: str) -> Plan:
    return Plan(**json.loads(Path(path).read_text()))


def child_main(name: str, spec: str, result: str) -> int:
    """Entry of ``--run-part``: run one part, write its result JSON (status ok or failed)."""
    sys.path.insert(0, str(ROOT))
    plan = _spec(spec)
    try:
        if name in plan.fail:
            raise RuntimeError(f"injected failure in part {name} (--fail)")
        data = {"status": OK, **CHILD_PARTS[name](plan)}
        code = 0
    except Exception as err:  # noqa: BLE001 - reported to the parent as this part's error
        traceback.print_exc()
        data = {"status": FAILED, "error": err_line(err), **getattr(err, "info", {})}
        code = 1
    write_atomic(Path(result), json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
    return code


def child_preflight(plan: Plan) -> dict:
    """Versions, the machine, the requirements and entry points, one kernel of each kind."""
    info: dict = {"python": platform.python_version(), "executable": sys.executable,
                  "platform": platform.platform(), "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
                  "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                  "ram_gib": _ram_gib()}
    if os.path.isdir("/dev/shm"):
        shm = shutil.disk_usage("/dev/shm")
        info.update(shm_gib=shm.total / 2**30, shm_free_gib=shm.free / 2**30)
    import torch  # noqa: PLC0415 - the child's first heavy import, reported if it fails

    info.update(torch=torch.__version__, cuda=torch.version.cuda, torch_threads=torch.get_num_threads(),
                cuda_available=torch.cuda.is_available())
    versions, missing = {}, {}
    for module in ("torchvision", "numpy", "PIL", "cv2", "tqdm", "tensorboardX"):
        try:
            mod = importlib.import_module(module)
            versions[module] = getattr(mod, "__version__", "?")
        except Exception as err:  # noqa: BLE001
            missing[module] = err_line(err)
    info["packages"] = versions
    problems = []
    if missing:
        info["missing_packages"] = missing
        problems.append("missing requirements: " + "; ".join(f"{m} ({e})" for m, e in missing.items())
                        + " - the parts that use them will fail (carry wheels: bench/RESULTS.md, GPU check)")
    # The entry points import the whole project (engine, evaluation and the leaf packages).
    for module in ("train_cnn", "train_tcn", "eval_retrieval", "engine.trainer"):
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001
            raise FatalError(f"the project does not import: {module}: {err_line(err)}") from err
    if plan.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FatalError(f"--device {plan.device}: torch {torch.__version__} sees no usable CUDA device "
                             f"(torch.version.cuda {torch.version.cuda}; use --device cpu for the dry run)")
        dev = torch.device(plan.device)
        props = torch.cuda.get_device_properties(dev)
        free, total = torch.cuda.mem_get_info(dev)
        info.update(gpu=torch.cuda.get_device_name(dev), gpu_count=torch.cuda.device_count(),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                    gpu_mem_gib=total / 2**30, gpu_free_gib=free / 2**30, cudnn=torch.backends.cudnn.version(),
                    bf16=torch.cuda.is_bf16_supported())
        info["smoke"] = _smoke(torch, dev)
        shm_need = 2 * plan.workers * PREFETCH * 256 * 224 * 224 * 4 / 2**30  # CNN float32 batches in flight
        if info.get("shm_free_gib") is not None and info["shm_free_gib"] < shm_need:
            problems.append(f"/dev/shm has {info['shm_free_gib']:.1f} GiB free; {plan.workers} loader workers "
                            f"may hold ~{shm_need:.1f} GiB of 224 px batches there")
    else:
        info["smoke"] = _smoke(torch, torch.device("cpu"))
    info["problems"] = problems
    if problems:
        # Not fatal: the parts that need what is missing fail on their own, the rest still run.
        raise PreflightProblems("; ".join(problems), info)
    return info


class FatalError(RuntimeError):
    """A broken environment: the check stops after the preflight."""


class PreflightProblems(RuntimeError):
    """Problems that leave the other parts able to run; ``info`` is the preflight's report."""

    def __init__(self, message: str, info: dict) -> None:
        super().__init__(message)
        self.info = info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _ram_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _smoke(torch, dev) -> dict:
    """One bf16 matrix product and one cuDNN convolution (channels_last, autocast): seconds
    each, first call included (CUDA context, cuBLAS/cuDNN handles)."""
    out = {}
    t0 = time.perf_counter()
    a = torch.randn(1024, 1024, device=dev, dtype=torch.bfloat16)
    out["matmul_abs_sum"] = float((a @ a).float().abs().sum())
    out["matmul_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    conv = torch.nn.Conv2d(3, 64, 11, stride=4, padding=2).to(dev).to(memory_format=torch.channels_last)
    x = torch.rand(8, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        y = conv(x)
    y.float().sum().backward()
    out["conv_shape"] = list(y.shape)
    out["conv_s"] = round(time.perf_counter() - t0, 3)
    if not math.isfinite(out["matmul_abs_sum"]) or not bool(torch.isfinite(conv.weight.grad).all()):
        raise FatalError(f"non-finite results from the smoke kernels on {dev}")
    return out


def child_store(plan: Plan) -> dict:
    """Synthetic sketches -> Quick, Draw! simplified ndjson (one file per class) -> a store made
    by data.prepare, sized for every part that reads it."""
    from config import load_config  # noqa: PLC0415
    from data import prepare  # noqa: PLC0415
    from data.synthetic import SyntheticSketches  # noqa: PLC0415

    steps = plan.warm_steps + plan.steps
    need = max(_batch(plan, load_config(exp, {})) * steps for exp in EXPERIMENTS.values())
    need = max(need, _bench_need(plan))
    per_class = {"train": math.ceil(need / plan.classes) + 1, "val": plan.val_per_class,
                 "query": plan.query_per_class, "gallery": plan.gallery_per_class}
    total = sum(per_class.values())
    source = SyntheticSketches("train", per_class=total, num_classes=plan.classes, seed=plan.seed)
    src = Path(plan.work) / "ndjson"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    t0 = time.perf_counter()
    jobs = [(c, lo, min(lo + 2000, total), plan.classes, total, plan.seed) for c in range(plan.classes)
            for lo in range(0, total, 2000)]
    if plan.workers > 1:
        import multiprocessing  # noqa: PLC0415

        with multiprocessing.get_context("fork").Pool(plan.workers) as pool:
            chunks = pool.map(_ndjson_lines, jobs)
    else:
        chunks = [_ndjson_lines(job) for job in jobs]
    for (c, *_), lines in zip(jobs, chunks):
        with open(src / f"{source.class_names[c]}.ndjson", "a", encoding="utf-8") as fh:
            fh.writelines(lines)
    generate_s = time.perf_counter() - t0
    store = Path(plan.work) / "store"
    t0 = time.perf_counter()
    counts = ",".join(f"{k}={v}" for k, v in per_class.items())
    rc = prepare.main(["--src", str(src), "--out", str(store), "--per-class", counts, "--no-progress",
                       "--workers", str(max(1, min(plan.workers, plan.classes)))])
    if rc != 0:
        raise RuntimeError(f"python -m data.prepare ended with exit status {rc}")
    meta = json.loads((store / "meta.json").read_text())
    shutil.rmtree(src, ignore_errors=True)
    return {"store": str(store), "classes": plan.classes, "per_class": per_class,
            "sketches": plan.classes * total, "generate_s": round(generate_s, 2),
            "prepare_s": round(time.perf_counter() - t0, 2), "meta_num_classes": meta.get("num_classes")}


def _ndjson_lines(job: tuple) -> list[str]:
    """Sketches ``lo..hi`` of class ``c`` as simplified-ndjson lines (integer strokes in 0..255)."""
    from data.synthetic import SyntheticSketches  # noqa: PLC0415

    c, lo, hi, classes, per_class, seed = job
    source = SyntheticSketches("train", per_class=per_class, num_classes=classes, seed=seed)
    lines = []
    for j in range(lo, hi):
        sketch = source[j * classes + c]
        drawing = [[[int(round(v)) for v in s[:, 0]], [int(round(v)) for v in s[:, 1]]] for s in sketch.strokes]
        lines.append(json.dumps({"word": source.class_names[c], "key_id": str((c + 1) * 10**9 + j),
                                 "drawing": drawing}, separators=(",", ":")) + "\n")
    return lines


def _batch(plan: Plan, cfg) -> int:
    return plan.batch.get(cfg.name, cfg.train.batch_size)


def _bench_need(plan: Plan) -> int:
    """Train sketches bench_gpu's end-to-end rows read: batch x (warm-up + loader queue + steps)."""
    def arg(flag: str, default: int) -> int:
        args = plan.bench_args
        return int(args[args.index(flag) + 1]) if flag in args else default

    workers = arg("--workers", 8)
    return arg("--batch", 64) * (arg("--warmup", 10) + 2 * workers * PREFETCH + arg("--e2e-steps", 100) + 1)


# ---------------------------------------------------------------------------- training
class _TimedBatches:
    """Wraps a loader: for every batch, (asked, received) perf_counter times, with the device
    synchronised before each ask so that the step before is finished and its GPU time is
    counted as compute, never as waiting for data."""

    def __init__(self, loader, sync: Callable[[], None], marks: list) -> None:
        self.loader, self.sync, self.marks = loader, sync, marks

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            self.sync()
            asked = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.marks.append((asked, None))
                return
            self.marks.append((asked, time.perf_counter()))
            yield batch


def time_training_batches(trainer, sync: Callable[[], None], marks: list) -> None:
    """Make ``trainer.fit()`` read its training batches through :class:`_TimedBatches`, by
    wrapping the trainer's public :meth:`~engine.trainer.Trainer.train_loader`."""
    plain = trainer.train_loader

    def timed(epoch: int, start_step: int = 0):
        loader, steps = plain(epoch, start_step)
        return _TimedBatches(loader, sync, marks), steps

    trainer.train_loader = timed


def step_on_views(trainer, x, y) -> tuple[Callable[[], object], int]:
    """The trainer's own step on one loader batch already on the device, through its public
    API: :meth:`~engine.trainer.Trainer.prepare_batch` once (the pretext views), then
    :meth:`~engine.trainer.Trainer.optimise` (forward under its autocast, loss, backward,
    optimiser step) per call. Returns the callable and the inputs per step (the
    algorithm's ``StepOutput.count``: 4 per sketch for rotation)."""
    views = trainer.prepare_batch((x, y))

    def step():
        return trainer.optimise(views)[0]

    first = step()
    return (lambda: step().loss), first.count


def child_train(plan: Plan, part: str) -> dict:
    """One experiment as configured, speed switches on, through ``Trainer.fit()``: timed loader
    batches, then the same step on one batch already on the device."""
    import torch  # noqa: PLC0415

    from config import load_config  # noqa: PLC0415
    from engine.trainer import Trainer  # noqa: PLC0415

    exp = EXPERIMENTS[part]
    base = load_config(exp, {})
    batch = _batch(plan, base)
    warm, steps = plan.warm_steps, plan.steps
    over = {
        "train.device": plan.device, "train.out": str(Path(plan.work) / "runs"), "train.epochs": 1,
        "train.batch_size": batch, "train.max_steps_per_epoch": warm + steps,
        "train.workers": plan.workers, "train.pin_memory": True, "train.persistent_workers": True,
        "train.cudnn_benchmark": True, "train.amp": "bf16", "train.seed": plan.seed,
        "data.val_per_class": plan.val_per_class, "data.num_classes": plan.classes,
        # Rasters drawn every batch, as at full scale (too large a cache to build by default),
        # not gathered from a cache of this small store.
        "data.raster_cache": False,
    }
    if base.data.modality == "raster":
        over["train.channels_last"] = True
        if plan.image_size:
            over["data.image_size"] = plan.image_size
    over.update(plan.overrides.get(exp, {}))
    if plan.store:
        over.update({"data.source": "store", "data.path": plan.store})
    else:
        over["data.train_per_class"] = math.ceil(batch * (warm + steps) / plan.classes) + 1
    cfg = load_config(exp, over)
    shutil.rmtree(Path(cfg.train.out) / cfg.name, ignore_errors=True)  # a --work folder used before
    device = torch.device(plan.device)
    on_cuda = device.type == "cuda"

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)

    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    if len(trainer.train_set) < batch * (warm + steps):
        raise RuntimeError(f"the train split has {len(trainer.train_set)} sketches, fewer than "
                           f"{warm + steps} steps of {batch}")
    marks: list = []
    time_training_batches(trainer, sync, marks)
    history = trainer.fit()
    fit_s = time.perf_counter() - t0
    # train_epoch asks for one batch more before it sees the step cap: warm + steps + 1 marks.
    if len(marks) < warm + steps + 1 or any(m[1] is None for m in marks[: warm + steps]):
        raise RuntimeError(f"fit() asked for {len(marks)} batches, expected {warm + steps + 1}")
    peak = ((torch.cuda.max_memory_allocated(device) / 2**30, torch.cuda.max_memory_reserved(device) / 2**30)
            if on_cuda else (None, None))
    # Step i: data = received_i - asked_i; compute = asked_{i+1} - received_i. The mark after the
    # last timed step is the ask for the batch after it (or validation's first, when fit ended).
    timed = range(warm, warm + steps)
    end = marks[warm + steps][0]
    data = sum(marks[i][1] - marks[i][0] for i in timed) / steps
    compute = sum(marks[i + 1][0] - marks[i][1] for i in timed) / steps
    total = (end - marks[warm][0]) / steps

    # The model alone: the same step on one batch already on the device, no loader.
    items = [trainer.train_set[i] for i in range(batch)]
    x = torch.stack([item[0] for item in items]).to(device)
    y = torch.tensor([item[1] for item in items]).to(device)
    trainer.net.train()
    step, inputs_per_step = step_on_views(trainer, x, y)
    for _ in range(1 if plan.dry else 3):
        step()
    sync()
    t1 = time.perf_counter()
    for _ in range(plan.model_steps):
        loss = step()
    sync()
    alone = (time.perf_counter() - t1) / plan.model_steps
    alone_loss = float(loss.detach().float())

    per_sketch = inputs_per_step / batch
    rec = history[-1] if history else {}
    return {
        "experiment": exp, "model": cfg.model.name, "source": "store" if plan.store else "generator",
        "batch_sketches": batch, "inputs_per_sketch": per_sketch, "inputs_per_step": inputs_per_step,
        "input": f"{cfg.data.image_size} px raster" if cfg.data.modality == "raster" else f"{cfg.data.max_points} x 4 strokes",
        "switches": {k: getattr(cfg.train, k) for k in ("amp", "channels_last", "workers", "pin_memory",
                                                           "persistent_workers", "cudnn_benchmark", "compile")},
        "channels_last_used": bool(getattr(trainer, "_channels_last", False)),
        "warmup_steps": warm, "steps": steps,
        "step_ms": 1000 * total, "data_ms": 1000 * data, "compute_ms": 1000 * compute,
        "data_wait_fraction": data / total,
        "sketches_per_s": batch / total, "inputs_per_s": inputs_per_step / total,
        "model_alone": {"steps": plan.model_steps, "step_ms": 1000 * alone, "sketches_per_s": batch / alone,
                        "inputs_per_s": inputs_per_step / alone, "loss": alone_loss},
        "e2e_vs_model_alone": alone / total,
        "first_batch_s": marks[0][1] - marks[0][0], "first_step_s": marks[1][0] - marks[0][1],
        "peak_mem_allocated_gib": peak[0], "peak_mem_reserved_gib": peak[1],
        "fit_s": fit_s, "train_loss": rec.get("train_loss"), "val_acc": rec.get("val_acc"),
        "checkpoint": str(Path(cfg.train.out) / cfg.name / "best.pt"),
    }


CHILD_PARTS: dict[str, Callable[[Plan], dict]] = {
    "preflight": child_preflight,
    "store": child_store,
    "train_cnn": lambda plan: child_train(plan, "train_cnn"),
    "train_tcn": lambda plan: child_train(plan, "train_tcn"),
}


# ============================================================================ the report
def markdown(s: dict) -> str:
    """The summary as Markdown: machine, command, one line per part, then each part's figures."""
    parts = s["parts"]
    m = s.get("machine", {})
    lines = ["# GPU check", "", f"machine: {machine_line(m)}", "", f"command: `{s['command']}`", "",
             f"device {s['device']}, {s['mode']}; started {s['started']}, {fmt(s.get('seconds'), '.0f')} s "
             f"(budget {s['budget_s']:.0f} s); overall: **{s.get('status', 'running')}**", "",
             "| part | status | seconds | result |", "|---|---|---|---|"]
    for name in s["part_names"]:
        r = parts.get(name)
        if r is None:
            lines.append(f"| {name} | pending | - | |")
            continue
        what = r.get("error") or r.get("reason") or part_result(name, r)
        lines.append(f"| {name} | {r['status']} | {fmt(r.get('seconds'), '.1f')} | {what} |")
    lines += training_tables(parts) + bench_tables(parts) + eval_table(parts) + test_table(parts)
    notes = list(s.get("notes", []))
    for name in s["part_names"]:
        r = parts.get(name, {})
        if r.get("note"):
            notes.append(f"{name}: {r['note']}")
    pre = parts.get("preflight", {})
    notes += [f"preflight: {p}" for p in pre.get("problems", [])]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def machine_line(m: dict) -> str:
    if not m:
        return "unknown (the preflight did not report)"
    gpu = (f"{m['gpu']} ({m['gpu_mem_gib']:.1f} GiB, {m['gpu_free_gib']:.1f} GiB free; capability {m['capability']}, "
           f"{m['multiprocessors']} SMs), CUDA {m['cuda']}, cuDNN {m['cudnn']}" if m.get("gpu") else "no GPU used")
    shm = f", /dev/shm {m['shm_gib']:.1f} GiB" if m.get("shm_gib") is not None else ""
    return (f"{gpu}; torch {m.get('torch', '?')}, Python {m.get('python', '?')}; {m.get('cpu_count', '?')} CPU cores "
            f"({m.get('usable_cpus', '?')} usable, {m.get('cpu_model') or '?'}){shm}, RAM {fmt(m.get('ram_gib'), '.0f')} GiB")


def part_result(name: str, r: dict) -> str:
    if name == "preflight":
        return f"torch {r.get('torch')}, {r.get('gpu') or 'CPU'}; requirements and entry points import"
    if name == "test_cuda":
        return f"{r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped"
    if name == "store":
        return f"{r['sketches']} synthetic sketches, {r['classes']} classes ({r['generate_s']} s + prepare {r['prepare_s']} s)"
    if name.startswith("bench_gpu"):
        rep = r.get("report") or {}
        return f"{len(rep.get('model_rows', []))} model-alone rows, {len(rep.get('e2e_rows', []))} end-to-end rows"
    if name.startswith("train_"):
        return (f"{r['sketches_per_s']:.1f} sketches/s, {r['inputs_per_s']:.1f} inputs/s, "
                f"data wait {pct(r['data_wait_fraction'])}, peak {fmt(r['peak_mem_allocated_gib'], '.2f')} GiB")
    if name == "eval":
        return f"mAP {r['mAP']:.4f}; features {fmt(r['features_s'], '.2f')} s, ranking {fmt(r['ranking_s'], '.2f')} s"
    return ""


TRAIN_HEADER = ["experiment", "model", "input", "batch (sketches)", "inputs/step", "sketches/s", "inputs/s", "ms/step",
                "data wait ms/step", "compute ms/step", "GPU wait fraction", "model alone inputs/s",
                "end to end / model alone", "peak allocated GiB", "peak reserved GiB"]


def training_tables(parts: dict) -> list[str]:
    rows = [parts[n] for n in ("train_cnn", "train_tcn") if parts.get(n, {}).get("status") == OK]
    if not rows:
        return []
    first = rows[0]
    out = ["", f"Training at paper settings, speed switches on ({first['source']} data, "
               f"loader workers {first['switches']['workers']}, {first['warmup_steps']} warm-up + {first['steps']} timed steps; "
               "model alone: the same step on one batch already on the device):", "",
           "| " + " | ".join(TRAIN_HEADER) + " |", "|" + "---|" * len(TRAIN_HEADER)]
    for r in rows:
        out.append(f"| {r['experiment']} | {r['model']} | {r['input']} | {r['batch_sketches']} | {r['inputs_per_step']} | "
                   f"{r['sketches_per_s']:.1f} | {r['inputs_per_s']:.1f} | {r['step_ms']:.2f} | {r['data_ms']:.2f} | "
                   f"{r['compute_ms']:.2f} | {r['data_wait_fraction']:.3f} | {r['model_alone']['inputs_per_s']:.1f} | "
                   f"{r['e2e_vs_model_alone']:.2f} | {fmt(r['peak_mem_allocated_gib'], '.2f')} | "
                   f"{fmt(r['peak_mem_reserved_gib'], '.2f')} |")
    return out


def bench_tables(parts: dict) -> list[str]:
    out: list[str] = []
    for name in ("bench_gpu", "bench_gpu_compile"):
        rep = (parts.get(name) or {}).get("report")
        if not rep:
            continue
        out += ["", f"{name} (bench/bench_gpu.py; {parts[name]['source']} data), model alone:", "",
                "| model | mode | inputs/step | images/s | ms/step | TFLOP/s | % of peak | peak GPU mem GiB |",
                "|---|---|---|---|---|---|---|---|"]
        for r in rep.get("model_rows", []):
            if "error" in r:
                out.append(f"| {r['model']} | {r['mode']} | failed: {r['error']} | | | | | |")
                continue
            out.append(f"| {r['model']} | {r['mode']} | {r['inputs_per_step']} | {r['images_per_s']:.1f} | "
                       f"{r['ms_per_step']:.2f} | {fmt(r.get('tflops'), '.3g')} | {pct(r.get('peak_share'))} | "
                       f"{fmt(r.get('peak_mem_gib'), '.2f')} |")
        if rep.get("e2e_rows"):
            out += ["", f"{name}, end to end (Trainer.train_epoch with the real loader):", "",
                    "| experiment | mode | workers | sketches/s | images/s | data wait ms/step | compute ms/step "
                    "| data share | vs model alone |", "|---|---|---|---|---|---|---|---|---|"]
            for r in rep["e2e_rows"]:
                if "error" in r:
                    out.append(f"| {r['experiment']} | {r['mode']} | failed: {r['error']} | | | | | | |")
                    continue
                out.append(f"| {r['experiment']} | {r['mode']} | {r['workers']} | {r['sketches_per_s']:.1f} | "
                           f"{r['images_per_s']:.1f} | {r['data_ms_per_step']:.2f} | {r['compute_ms_per_step']:.2f} | "
                           f"{pct(r['data_share'])} | {fmt(r.get('vs_model_only'), '.2f')} |")
    return out


def eval_table(parts: dict) -> list[str]:
    r = parts.get("eval")
    if not r or r.get("status") != OK:
        return []
    return ["", "Retrieval on the trained CNN checkpoint (eval_retrieval.py):", "",
            "| layer | dim | queries | gallery | feature extraction s | sketches/s | ranking s | mAP |",
            "|---|---|---|---|---|---|---|---|",
            f"| {r['layer']} | {r['feature_dim']} | {r['num_queries']} | {r['gallery_size']} | "
            f"{fmt(r['features_s'], '.2f')} | {fmt(r['features_per_s'], '.1f')} | {fmt(r['ranking_s'], '.2f')} | "
            f"{r['mAP']:.4f} |"]


def test_table(parts: dict) -> list[str]:
    r = parts.get("test_cuda") or {}
    if not r.get("failures"):
        return []
    return ["", "tests/engine/test_cuda.py failures:", ""] + [f"- {n}" for n in r["failures"]]


# ============================================================================ command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="folder for gpu_check.json, gpu_check.md and gpu_check.log (required)")
    p.add_argument("--device", default=os.environ.get("SKETCH_TEST_DEVICE", "cuda"),
                   help="cuda, cuda:N, or cpu for the dry run with tiny sizes (default: $SKETCH_TEST_DEVICE, else cuda)")
    p.add_argument("--quick", action="store_true", help="half the steps, a smaller gallery, no compile rows")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-time budget of all parts (default 420 s; --quick 240 s; dry run 300 s)")
    p.add_argument("--workers", type=int, default=None, help="loader processes (default 16; dry run 1)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default 60; --quick 30)")
    p.add_argument("--source", choices=("store", "generator"), default="store",
                   help="training / bench data: synthetic sketches in a prepared store (default) or the generator")
    p.add_argument("--only", nargs="+", choices=PART_NAMES, default=None,
                   help="run only these parts (plus the preflight, and the store when they read it)")
    p.add_argument("--skip", nargs="+", choices=PART_NAMES, default=[], help="leave these parts out")
    p.add_argument("--pytest-k", default=None, help="pytest -k expression for test_cuda (dry run: one quick test)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument("--fail", action="append", choices=PART_NAMES, default=[],
                   help="make this part raise at its start (checks the failure path; used by the tests)")
    p.add_argument("--run-part", choices=list(PYTHON_PARTS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_part:
        if not (args.spec and args.result):
            p.error("--run-part needs --spec and --result")
        return args
    if not args.out:
        p.error("--out DIR is required")
    if not (args.device == "cpu" or args.device == "cuda" or args.device.startswith("cuda:")):
        p.error(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    for name in ("workers", "steps"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "workers" else 1):
            p.error(f"--{name} is too small: {value}")
    return args


def selected_parts(args: argparse.Namespace) -> list[Part]:
    chosen = []
    for part in PARTS:
        wanted = args.only is None or part.name in args.only or part.name == "preflight"
        if part.name == "store" and args.only is not None:
            wanted = wanted or bool({"bench_gpu", "bench_gpu_compile", "train_cnn", "train_tcn", "eval"} & set(args.only))
        if part.name == "train_cnn" and args.only is not None and "eval" in args.only:
            wanted = True  # eval reads the checkpoint this run trains
        if part.name in args.skip and part.name != "preflight":
            reason = "--skip"
            part = Part(part.name, part.run, part.cap_s, part.needs, lambda c, r=reason: r, part.fatal)
        elif not wanted:
            part = Part(part.name, part.run, part.cap_s, part.needs, lambda c: "not in --only", part.fatal)
        chosen.append(part)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_part:
        return child_main(args.run_part, args.spec, args.result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.log").unlink(missing_ok=True)
    console = Console(out / "gpu_check.log")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    plan = make_plan(args, work)
    budget = args.budget_s or (300.0 if plan.dry else 240.0 if args.quick else 420.0)
    summary = {
        "version": 1,
        "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", str(SCRIPT), *argv]),
        "python_executable": sys.executable,
        "device": plan.device,
        "mode": "dry run on the CPU (tiny sizes)" if plan.dry else ("quick" if args.quick else "full"),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "budget_s": budget,
        "plan": asdict(plan),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "part_names": PART_NAMES,
        "parts": {},
        "notes": [],
    }
    check = Check(plan, out, console, budget, summary)
    console.line(f"gpu_check: {summary['mode']} on {plan.device}; budget {budget:.0f} s; results in {out}")
    console.line(f"command: {summary['command']}")
    check.save()
    interrupted = False
    try:
        run_parts(check, selected_parts(args))
    except KeyboardInterrupt:
        interrupted = True
        summary["notes"].append("interrupted (Ctrl-C / SIGINT); the parts not reached are missing")
    finally:
        statuses = [r["status"] for r in summary["parts"].values()]
        fatal = any(r.get("fatal") for r in summary["parts"].values())
        summary["status"] = ("failed (broken environment)" if fatal else
                             "ok" if all(s in (OK, SKIPPED) for s in statuses) and not interrupted else "failed")
        check.save()
        console.line("")
        console.line(markdown(summary).rstrip())
        console.line("")
        console.line(f"gpu_check: {summary['status']} in {summary['seconds']:.0f} s; "
                     f"{out / 'gpu_check.json'}, {out / 'gpu_check.md'}, {out / 'gpu_check.log'}")
        console.close()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if interrupted:
        return 130
    if summary["status"].startswith("failed (broken"):
        return 2
    return 0 if summary["status"] == OK else 1


if __name__ == "__main__":
    sys.exit(main())
