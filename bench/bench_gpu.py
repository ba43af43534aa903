"""Training images per second on a GPU: fp32 against bf16 + channels_last, model alone and end to end.

    python bench/bench_gpu.py                        # CUDA when available; both tables, defaults below
    python bench/bench_gpu.py --store DIR --workers 8 --out-json gpu.json
    python bench/bench_gpu.py --compile              # adds bf16 + channels_last + torch.compile rows
    python bench/bench_gpu.py --tf32 off             # fp32 rows without TF32 (default: torch's own setting)
    python bench/bench_gpu.py --device cpu --batch 2 --warmup 1 --steps 1 --e2e-steps 2 --image-size 64 --workers 0

Table 1 (model throughput): for AlexNet-BN (cnn_rotation) and the ResNet
(cnn_rotation_resnet), one training step (forward, loss, backward, optimiser step) on the
rotation views of a fixed batch of synthetic sketches already on the device (views made once,
so no loader and no view cost), in each mode: fp32 NCHW; bf16 autocast NCHW; bf16 autocast +
channels_last (and with --compile bf16 + channels_last + torch.compile). The model, optimiser,
autocast, channels_last and compile come from the project's own Trainer (engine/trainer.py) with
``train.amp``, ``train.channels_last`` and ``train.compile`` set, and the step is the trainer's
own (``Trainer.prepare_batch`` once, then ``Trainer.optimise`` per step: forward under its
autocast, loss, backward, optimiser step).
Timing: warm-up steps, then the timed steps between two device synchronisations. FLOPs: the
forward pass of one input counted once per model with ``torch.utils.flop_counter.FlopCounterMode``
on the CPU in fp32 (convolutions and matrix products only: 2 x multiply-adds, no batch norm,
ReLU, pooling or bias); a training step is taken as 3 x forward x inputs (the usual backward =
2 x forward convention). "% of peak" is against the vendor's dense figure for the row's number
format (fp32 rows: the TF32 peak when cuDNN may use TF32 for convolutions, as torch does by
default; the convolutions are almost all of the FLOPs), or --peak-tflops.

Table 2 (end to end): the Trainer's own ``train_epoch`` (loader with --workers processes and
pinned memory, host-to-device copy, views, forward, backward, step, its per-step loss checks:
``Trainer.train_step``)
for the same experiments in bf16 + channels_last (fp32 on the CPU), on the prepared store given
by --store or on the built-in synthetic sketches. The loader is wrapped to time the wait for
each batch ("data"); "compute" is everything from receiving a batch to asking for the next one,
with a device synchronisation before the clock is read, so no GPU work leaks into the next
data wait (through ``train_epoch``'s ``wrap_loader``). The warm-up is --warmup + 2 x workers x prefetch batches (the loader's queue), then
--e2e-steps timed steps. "vs model-only" = end-to-end images/s / Table 1's images/s for the
same model and mode.

On CUDA, torch.backends.cudnn.benchmark is on for both tables, as in training
(``train.cudnn_benchmark``, on by default); TF32 is left as torch has it unless --tf32 on/off
is given; the machine line says both.

Progress goes to stderr, the tables to stdout; --out-json rewrites a JSON file (atomically)
after every row; a row that fails is printed as "failed: ..." (traceback on stderr) and the
others still run. On the CPU only fp32 rows run (the trainer's bf16 autocast and channels_last
are CUDA-only). Exit code 2 when --device cuda is asked for without CUDA (or --store is not a
folder, or --image-size is below a model's minimum), 1 when a row failed. The defaults are
sized for one H200: about a minute in all without --compile (each compiled row adds its
compile time, typically tens of seconds).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import ConfigError, load_config  # noqa: E402
from engine import build  # noqa: E402
from engine.trainer import Trainer  # noqa: E402
from utils.atomic import atomic_write_text  # noqa: E402
from utils.logger import RunLogger  # noqa: E402

EXPERIMENTS = {"alexnet": "cnn_rotation", "resnet": "cnn_rotation_resnet"}
# mode -> (train.amp, train.channels_last, train.compile)
MODES = {
    "fp32": ("none", False, False),
    "bf16": ("bf16", False, False),
    "bf16+channels_last": ("bf16", True, False),
    "bf16+channels_last+compile": ("bf16", True, True),
}
BEST_MODE = "bf16+channels_last"
DEFAULT_PREFETCH = 2  # torch's DataLoader default when train.prefetch_factor is None

# Dense (no sparsity) peak TFLOP/s from the vendors' spec sheets, matched by a substring of
# torch.cuda.get_device_name(); the first match wins, so specific names come first.
PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}),  # SXM
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)


def log(msg: str) -> None:
    print(f"[bench_gpu] {msg}", file=sys.stderr, flush=True)


def peak_tflops(device_name: str) -> dict[str, float] | None:
    """Dense peak TFLOP/s by number format ("bf16", "tf32", "fp32") for a GPU name, or None."""
    for key, peaks in PEAKS:
        if key.lower() in device_name.lower():
            return dict(peaks)
    return None


def tf32_state() -> dict[str, bool | None]:
    """Whether fp32 matmuls / cuDNN convolutions may use TF32, as torch has it now.

    The legacy flags are read first; torch >= 2.9 refuses to read them once the new
    ``fp32_precision`` API has been used, then that one is read instead."""
    try:
        return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                "cudnn_conv": bool(torch.backends.cudnn.allow_tf32)}
    except (AttributeError, RuntimeError):
        pass
    try:
        return {"matmul": torch.backends.cuda.matmul.fp32_precision == "tf32",
                "cudnn_conv": torch.backends.cudnn.conv.fp32_precision == "tf32"}
    except AttributeError:
        return {"matmul": None, "cudnn_conv": None}


def set_tf32(on: bool) -> None:
    """Turn TF32 on or off for fp32 matmuls and cuDNN convolutions (one API only: mixing the
    legacy flags and ``fp32_precision`` makes torch raise on the next read)."""
    try:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    except (AttributeError, RuntimeError):
        value = "tf32" if on else "ieee"
        torch.backends.cuda.matmul.fp32_precision = value
        torch.backends.cudnn.conv.fp32_precision = value


def err_line(err: BaseException) -> str:
    """An exception as one line (type and first line of its message)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_config(model: str, args: argparse.Namespace, out: str, mode: str, extra: dict | None = None):
    amp, channels_last, compile_ = MODES[mode]
    overrides = {
        "train.device": args.device,
        "train.batch_size": args.batch,
        "train.out": out,
        "train.amp": amp,
        "train.channels_last": channels_last,
        "train.compile": compile_,
        "train.workers": 0,
        "data.train_per_class": max(1, math.ceil(args.batch / 12)),
        "data.val_per_class": 1,
        # Drawn every batch, as at full scale (whose cache would be too large to build by
        # default): the loader rows measure drawing, not a small store's raster cache.
        "data.raster_cache": False,
    }
    if args.image_size is not None:
        overrides["data.image_size"] = args.image_size
    overrides.update(extra or {})
    return load_config(EXPERIMENTS[model], overrides)


def forward_flops(cfg) -> int:
    """FLOPs of one input's forward pass (FlopCounterMode: convolutions and matmuls), CPU, fp32."""
    model = build.build_model(cfg, build.head_size(cfg)).eval()
    size = cfg.data.image_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, size, size))
    return int(counter.get_total_flops())


def row_peak(mode: str, device: torch.device, peaks: dict[str, float] | None,
             given: float | None) -> tuple[float | None, str]:
    """(peak TFLOP/s, which figure) for a row."""
    if given is not None:
        return given, "given"
    if device.type != "cuda" or peaks is None:
        return None, "-"
    if MODES[mode][0] == "bf16":
        return peaks["bf16"], "bf16"
    kind = "tf32" if tf32_state()["cudnn_conv"] else "fp32"
    return peaks[kind], kind


def free(device: torch.device, compiled: bool) -> None:
    gc.collect()
    if compiled:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def model_row(model: str, mode: str, args: argparse.Namespace, device: torch.device, flops: int | None,
              out: str) -> dict:
    """Table 1: training steps per second on a fixed batch of views already on the device."""
    cfg = make_config(model, args, out, mode)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(cfg, progress=False)
    ds = trainer.train_set
    items = [ds[i] for i in range(args.batch)]
    x = torch.stack([item[0] for item in items]).to(device)
    y = torch.tensor([item[1] for item in items]).to(device)
    views = trainer.prepare_batch((x, y))
    trainer.net.train()

    def step() -> torch.Tensor:
        out, _ = trainer.optimise(views)
        return out.loss

    for _ in range(args.warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync(device)
    seconds = (time.perf_counter() - t0) / args.steps
    n = len(views[1])  # rotation targets: one per input
    row = {
        "model": model, "experiment": cfg.name, "mode": mode, "inputs_per_step": n,
        "images_per_s": n / seconds, "ms_per_step": 1000 * seconds,
        "channels_last": bool(trainer._channels_last),
        "final_loss": float(loss.detach().float()),
        "tflops": 3 * flops * n / seconds / 1e12 if flops else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    return row


class _TimedLoader:
    """Wraps the trainer's loader: records (asked, received) perf_counter times per batch,
    synchronising the device before each ask so that the step before is finished."""

    def __init__(self, loader, device: torch.device, marks: list) -> None:
        self.loader, self.device, self.marks = loader, device, marks

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            sync(self.device)
            asked = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.marks.append((asked, None))
                return
            self.marks.append((asked, time.perf_counter()))
            yield batch


def e2e_row(model: str, mode: str, args: argparse.Namespace, device: torch.device, out: str,
            model_rows: list[dict]) -> tuple[dict, list[str]]:
    """Table 2: the trainer's own train_epoch with the real loader, data wait and compute timed."""
    notes: list[str] = []
    warm = args.warmup + 2 * args.workers * DEFAULT_PREFETCH
    steps = args.e2e_steps
    if args.store:
        extra = {"data.source": "store", "data.path": args.store}
    else:
        extra = {"data.train_per_class": math.ceil(args.batch * (warm + steps + 1) / 12)}
    extra.update({"train.workers": args.workers, "train.pin_memory": True})
    cfg = make_config(model, args, out, mode, extra)
    trainer = Trainer(cfg, progress=False)
    available = len(trainer.train_set) // args.batch
    if available < warm + steps:
        if available - warm < 1:
            raise ValueError(f"the train split has {len(trainer.train_set)} sketches: not enough for "
                             f"{warm} warm-up steps of {args.batch}")
        notes.append(f"{cfg.name}: the train split has {len(trainer.train_set)} sketches, so "
                     f"{available - warm} timed steps instead of {steps}")
        steps = available - warm
    trainer.cfg.train.max_steps_per_epoch = warm + steps
    size = cfg.data.image_size
    per_sketch = len(trainer.algorithm.views(torch.zeros(2, 1, size, size))[1]) / 2

    marks: list = []
    result = trainer.train_epoch(1, RunLogger(out, enabled=False),
                                 wrap_loader=lambda loader: _TimedLoader(loader, device, marks))
    if result["steps"] != warm + steps or len(marks) < warm + steps + 1:
        raise RuntimeError(f"train_epoch ran {result['steps']} steps, expected {warm + steps}")
    timed = range(warm, warm + steps)
    data = sum(marks[i][1] - marks[i][0] for i in timed) / steps
    compute = sum(marks[i + 1][0] - marks[i][1] for i in timed) / steps
    total = (marks[warm + steps][0] - marks[warm][0]) / steps
    images = per_sketch * args.batch / total
    base = next((r for r in model_rows if r["model"] == model and r["mode"] == mode and "error" not in r), None)
    row = {
        "model": model, "experiment": cfg.name, "mode": mode,
        "source": "store" if args.store else "synthetic", "store": args.store,
        "workers": args.workers, "warmup_steps": warm, "steps": steps,
        "sketches_per_s": args.batch / total, "images_per_s": images,
        "data_ms_per_step": 1000 * data, "compute_ms_per_step": 1000 * compute,
        "data_share": data / total,
        "vs_model_only": images / base["images_per_s"] if base else None,
        "train_loss": result["loss"],
    }
    return row, notes


def fmt(value, spec: str = ".1f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table1_line(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['mode']} | failed: {r['error']} | | | | | | | |"
    peak = "-" if r["peak_tflops"] is None else f"{r['peak_tflops']:g} ({r['peak_kind']})"
    speedup = "-" if r["speedup_vs_fp32"] is None else f"{r['speedup_vs_fp32']:.2f}x"
    return (f"| {r['model']} | {r['mode']} | {r['inputs_per_step']} | {r['images_per_s']:.1f} | "
            f"{r['ms_per_step']:.2f} | {fmt(r['tflops'], '.3g')} | {peak} | {fmt(r['peak_share'], '.1%')} | "
            f"{fmt(r['peak_mem_gib'], '.2f')} | {speedup} |")


def table2_line(r: dict) -> str:
    if "error" in r:
        return f"| {r['experiment']} | {r['mode']} | failed: {r['error']} | | | | | | | |"
    return (f"| {r['experiment']} | {r['mode']} | {r['source']} | {r['workers']} | {r['sketches_per_s']:.1f} | "
            f"{r['images_per_s']:.1f} | {r['data_ms_per_step']:.2f} | {r['compute_ms_per_step']:.2f} | "
            f"{r['data_share']:.0%} | {fmt(r['vs_model_only'], '.2f')} |")


def machine(device: torch.device, args: argparse.Namespace, tf32: dict, tf32_how: str) -> dict:
    info = {
        "host": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
        "gpu": None, "cuda": torch.version.cuda, "cudnn": None,
        "tf32_matmul": tf32["matmul"], "tf32_cudnn_conv": tf32["cudnn_conv"], "tf32_setting": tf32_how,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "batch_sketches": args.batch, "warmup": args.warmup, "steps": args.steps, "e2e_steps": args.e2e_steps,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_mem_gib=props.total_memory / 2**30,
                    cudnn=torch.backends.cudnn.version())
    return info


def machine_line(m: dict, size: int) -> str:
    on = {True: "on", False: "off", None: "?"}
    where = (f"{m['gpu']} ({m['gpu_mem_gib']:.0f} GiB), CUDA {m['cuda']}, cuDNN {m['cudnn']}" if m["gpu"]
             else f"CPU only ({m['host']})")
    cuda = (f"TF32 matmul {on[m['tf32_matmul']]}, cuDNN conv TF32 {on[m['tf32_cudnn_conv']]} ({m['tf32_setting']}); "
            f"cudnn.benchmark {on[m['cudnn_benchmark']]}" if m["gpu"] else "no TF32 / cuDNN settings (CPU)")
    return (f"machine: {where}; {m['cpu_cores']} CPU cores, torch {m['torch']} ({m['threads']} threads); "
            f"{cuda}; batch {m['batch_sketches']} sketches, {size} px, warm-up {m['warmup']} + {m['steps']} timed steps")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--batch", type=int, default=64, help="sketches per step (rotation: 4 inputs each)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per Table 1 row")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (cuDNN autotuning, compile)")
    p.add_argument("--e2e-steps", type=int, default=100, help="timed steps per Table 2 row")
    p.add_argument("--models", nargs="+", choices=sorted(EXPERIMENTS), default=["alexnet", "resnet"])
    p.add_argument("--workers", type=int, default=8, help="loader processes for Table 2")
    p.add_argument("--store", default=None, help="prepared store folder for Table 2 (default: synthetic)")
    p.add_argument("--image-size", type=int, default=None, help="raster side (default: the experiment's, 224)")
    p.add_argument("--compile", action="store_true", help="add bf16 + channels_last + torch.compile rows")
    p.add_argument("--tf32", choices=("default", "on", "off"), default="default",
                   help="TF32 for fp32 matmuls and convolutions (default: leave torch's setting)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for every row's %% of peak")
    p.add_argument("--no-e2e", action="store_true", help="skip Table 2")
    p.add_argument("--out-json", default=None, help="write all rows here (rewritten after every row)")
    args = p.parse_args(argv)
    for name in ("batch", "steps", "warmup", "e2e_steps", "workers"):
        if getattr(args, name) < (0 if name in ("warmup", "workers") else 1):
            p.error(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"bench_gpu: --device {args.device} was asked for but this machine has no usable CUDA device",
              file=sys.stderr)
        return 2
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True
    if args.tf32 != "default":
        set_tf32(args.tf32 == "on")
    tf32 = tf32_state()
    notes: list[str] = []
    modes = ["fp32", "bf16", BEST_MODE] + (["bf16+channels_last+compile"] if args.compile else [])
    e2e_modes = [BEST_MODE] + (["bf16+channels_last+compile"] if args.compile else [])
    if not on_cuda:
        modes, e2e_modes = ["fp32"], ["fp32"]
        notes.append("CPU: bf16, channels_last and compile rows skipped (the trainer's autocast and "
                     "channels_last are CUDA-only); fp32 only")

    m = machine(device, args, tf32, "set by --tf32" if args.tf32 != "default" else "torch defaults")
    peaks = peak_tflops(m["gpu"]) if m["gpu"] else None
    report = {"machine": m, "peaks_tflops": peaks, "peak_given": args.peak_tflops,
              "forward_gflop_per_input": {}, "model_rows": [], "e2e_rows": [], "notes": notes}

    def save() -> None:
        if args.out_json:
            atomic_write_text(args.out_json, json.dumps(report, indent=2) + "\n")

    failed = False
    with tempfile.TemporaryDirectory() as out:
        try:
            cfgs = {name: make_config(name, args, out, "fp32") for name in args.models}
        except ConfigError as err:
            print(f"bench_gpu: {err}", file=sys.stderr)
            return 2
        if args.store and not Path(args.store).is_dir():
            print(f"bench_gpu: --store {args.store} is not a folder (a store made by python -m data.prepare)",
                  file=sys.stderr)
            return 2
        size = next(iter(cfgs.values())).data.image_size
        flops: dict[str, int | None] = {}
        for name, cfg in cfgs.items():
            log(f"{name}: counting forward FLOPs (CPU, fp32, 1 input)")
            try:
                flops[name] = forward_flops(cfg)
            except ConfigError as err:  # e.g. an --image-size below the model's minimum
                print(f"bench_gpu: {err}", file=sys.stderr)
                return 2
            except Exception as err:  # noqa: BLE001 - the bench goes on without FLOPs
                flops[name] = None
                notes.append(f"{name}: FLOP count failed ({err_line(err)})")
            report["forward_gflop_per_input"][name] = None if flops[name] is None else flops[name] / 1e9
        save()

        print(machine_line(m, size))
        print("forward GFLOP per input (FlopCounterMode: convs + matmuls; a training step counts 3x): "
              + ", ".join(f"{n} {fmt(g, '.3f')}" for n, g in report["forward_gflop_per_input"].items()))
        print()
        print("| model | mode | inputs/step | images/s | ms/step | TFLOP/s | peak TFLOP/s | % of peak "
              "| peak GPU mem GiB | speed-up vs fp32 |")
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for name in args.models:
            fp32_row = None
            for mode in modes:
                log(f"{name} {mode}: {args.warmup} warm-up + {args.steps} timed steps")
                try:
                    r = model_row(name, mode, args, device, flops[name], out)
                except Exception as err:  # noqa: BLE001 - one failed row must not lose the others
                    traceback.print_exc()
                    failed = True
                    r = {"model": name, "mode": mode, "error": err_line(err)}
                free(device, MODES[mode][2])  # the row's trainer is gone with its frame
                if "error" not in r:
                    peak, r["peak_kind"] = row_peak(mode, device, peaks, args.peak_tflops)
                    r["peak_tflops"] = peak
                    r["peak_share"] = r["tflops"] / peak if peak and r["tflops"] else None
                    if mode == "fp32":
                        fp32_row = r
                    r["speedup_vs_fp32"] = r["images_per_s"] / fp32_row["images_per_s"] if fp32_row else None
                    log(f"{name} {mode}: {r['images_per_s']:.1f} images/s")
                report["model_rows"].append(r)
                save()
                print(table1_line(r), flush=True)

        if not args.no_e2e:
            source = f"store {args.store}" if args.store else "built-in synthetic sketches"
            print()
            print(f"end to end: Trainer.train_epoch on {source}, {args.workers} loader workers, "
                  f"{'pinned memory' if on_cuda else 'no pinned memory (CPU)'}; "
                  f"warm-up {args.warmup + 2 * args.workers * DEFAULT_PREFETCH} + {args.e2e_steps} timed steps")
            print()
            print("| experiment | mode | source | workers | sketches/s | images/s | data wait ms/step "
                  "| compute ms/step | data share | vs model-only |")
            print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
            for name in args.models:
                for mode in e2e_modes:
                    log(f"{name} {mode}: end to end, {args.workers} workers on {source}")
                    try:
                        r, more = e2e_row(name, mode, args, device, out, report["model_rows"])
                        notes.extend(more)
                        log(f"{name} {mode} end to end: {r['images_per_s']:.1f} images/s")
                    except Exception as err:  # noqa: BLE001
                        traceback.print_exc()
                        failed = True
                        r = {"model": name, "experiment": EXPERIMENTS[name], "mode": mode,
                             "error": err_line(err)}
                    free(device, MODES[mode][2])
                    report["e2e_rows"].append(r)
                    save()
                    print(table2_line(r), flush=True)
    if notes:
        print()
        for note in notes:
            print(f"note: {note}")
    save()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
