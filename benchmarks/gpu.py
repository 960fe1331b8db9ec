"""One prepared GPU run: every figure of the GPU path, a JSON line per measurement.

Runs with only what a GPU machine has (torch, numpy, pyarrow, h5py, scikit-learn; no pip, no
network; jetlib from the checkout on ``PYTHONPATH``; tqdm optional) in under 8 minutes on one GPU,
on a dataset folder made beforehand (see ``benchmarks/gpu_run.sh``). Lines, in order:

``env``        torch, CUDA, the GPU, its memory, cores; FLOPs per jet of the SimCLR step (counted
               with ``torch.utils.flop_counter.FlopCounterMode``) and the peak used for MFU
``loader``     loader-only jets/s to the device, ``stream`` and ``resident`` (first pass apart)
``step``       a SimCLR step (2 views, forward, backward, fused AdamW) at each batch size, eager
               and compiled, channels_last off and on: jets/s, MFU, peak memory, warm-up (compile)
               seconds; the compiled ones run last, within what the time budget leaves
``sync_free``  a few resident-loader training steps under ``torch.cuda.set_sync_debug_mode("error")``
``pretrain``   a real ``jetlib pretrain`` at the preset for 2 epochs, killed after its first
               checkpoint and re-run: it must resume and finish (jets/s, loss, k-NN per epoch)
``finetune``   a short full-label fine-tune from that encoder, evaluated: test ROC AUC
``summary``    the best step rate, its MFU, and the loader's margin over it (goal: >= 2x)

``--smoke`` runs all of it on CPU with tiny sizes on a generated toy dataset (the test suite does,
``tests/test_bench_gpu.py``); compiled and channels_last steps are then listed as skipped.

    PYTHONPATH=. python benchmarks/gpu.py --data DATASET [--out DIR] [--budget-s 450]
    PYTHONPATH=. python benchmarks/gpu.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# bf16 dense peaks in TFLOP/s (vendor data sheets, no sparsity), first match of the device name wins
PEAK_TFLOPS = (("H200 NVL", 835.0), ("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0),
               ("L40S", 362.1), ("L4", 121.0), ("A10", 125.0))
T0 = time.perf_counter()


def _tqdm_shim() -> None:
    """A silent stand-in for tqdm when the machine lacks it (jetlib.progress imports it)."""
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        class Bar:
            def __init__(self, iterable=None, *a, **kw):
                self.iterable = iterable

            def __iter__(self):
                return iter(self.iterable)

            def update(self, *a, **kw): ...
            def set_postfix(self, *a, **kw): ...
            def close(self): ...

        mod = types.ModuleType("tqdm.auto")
        mod.tqdm = Bar
        sys.modules["tqdm"] = types.ModuleType("tqdm")
        sys.modules["tqdm.auto"] = mod


def emit(measure: str, **values) -> dict:
    line = {"measure": measure, **values, "elapsed_s": round(time.perf_counter() - T0, 1)}
    print(json.dumps(line), flush=True)
    return line


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def toy_dataset(folder: Path, n: int = 192) -> str:
    """A learnable toy (narrow sparse quark jets, wide busy gluon jets) ingested for --smoke."""
    import h5py

    from jetlib.data.ingest import IngestConfig, ingest

    rng = np.random.default_rng(0)
    y = (rng.permutation(n) % 2).astype(np.float32)
    x = np.zeros((n, 125, 125, 3), np.float32)
    for r in range(n):
        width, hits = (3.0, 25) if y[r] else (9.0, 50)
        i, j = (np.clip(rng.normal(62, width, hits).astype(int), 0, 124) for _ in range(2))
        np.add.at(x[r], (i, j), rng.exponential(5.0, (hits, 1)))
    path = folder / "toy.h5"
    with h5py.File(path, "w") as f:
        f["X_jets"], f["y"] = x, y
        f["m0"], f["pt"] = rng.uniform(10, 100, n).astype(np.float32), np.full(n, 525.0, np.float32)
    return ingest(path, str(folder / "store"), cfg=IngestConfig(shard_rows=64, row_group_rows=16))


def flops_per_jet(model_cfg, cfg, dev) -> float:
    """FLOPs of one SimCLR step per jet: two views, forward and backward (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    from jetlib import methods
    from jetlib.models.resnet import ResNet

    model = methods.create(cfg.method, ResNet(model_cfg), cfg.method_params).to(dev)
    v = torch.rand(4, model_cfg.in_channels, 125, 125, device=dev)
    with FlopCounterMode(display=False) as counter:
        model(v, v.clone()).backward()
    return counter.get_total_flops() / 4


def measure_loader(uri, dev, batch: int, seconds: float) -> None:
    from jetlib.data.loader import JetLoader

    for mode in ("stream", "resident"):
        loader = JetLoader(uri, "train", batch_size=batch, device=dev, mode=mode)
        t = time.perf_counter()
        loader.set_epoch(0)
        n = sum(len(b) for b in loader)
        sync(dev)
        first = time.perf_counter() - t
        jets, epoch, t = 0, 1, time.perf_counter()
        while time.perf_counter() - t < seconds or epoch == 1:
            loader.set_epoch(epoch)
            last = None
            for last in loader:
                jets += len(last)
            sync(dev)
            epoch += 1
        rate = jets / (time.perf_counter() - t)
        emit("loader", mode=mode, batch_size=batch, jets_per_s=round(rate, 1), first_pass_s=round(first, 2),
             first_pass_jets=n, resident_mb=round(loader.resident.nbytes / 2**20, 1) if loader.resident else None)
        RESULTS.setdefault("loader", {})[mode] = rate


def make_step(model_cfg, cfg, dev, compiled: bool, channels_last: bool):
    from jetlib import methods
    from jetlib.augment import AugmentConfig, two_views
    from jetlib.device import as_input, autocast_for
    from jetlib.models.resnet import ResNet

    torch.manual_seed(0)
    model = methods.create(cfg.method, ResNet(model_cfg), cfg.method_params).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.param_groups(cfg.weight_decay), lr=cfg.lr, fused=dev.type == "cuda")
    net = torch.compile(model) if compiled else model
    autocast, aug = autocast_for(dev, cfg.amp), AugmentConfig(cfg.augment)

    def step(x):
        v1, v2 = two_views(x, aug)
        with autocast():
            loss = net(as_input(v1, channels_last), as_input(v2, channels_last))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def measure_step(uri, model_cfg, cfg, dev, batch, compiled, channels_last, seconds, flops, peak) -> None:
    from jetlib.data.loader import JetLoader

    if batch not in BATCHES:  # one real batch per size, reused: this measures the step, not the loader
        BATCHES[batch] = next(iter(JetLoader(uri, "train", batch_size=batch, device=dev, mode="resident"))).x
    x = BATCHES[batch]
    step = make_step(model_cfg, cfg, dev, compiled, channels_last)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    for _ in range(3):  # warm-up: compilation, cuDNN's autotuner
        step(x)
    sync(dev)
    warm = time.perf_counter() - t
    steps, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds or steps == 0:
        for _ in range(5):
            step(x)
        steps += 5
        sync(dev)
    rate = steps * batch / (time.perf_counter() - t)
    mfu = rate * flops / (peak * 1e12) if peak else None
    peak_mb = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    emit("step", batch_size=batch, compiled=compiled, channels_last=channels_last, jets_per_s=round(rate, 1),
         mfu=round(mfu, 4) if mfu is not None else None, peak_memory_mb=round(peak_mb, 1) if peak_mb else None,
         warmup_s=round(warm, 1), steps=steps)
    best = RESULTS.get("best_step")
    if best is None or rate > best["jets_per_s"]:
        RESULTS["best_step"] = {"jets_per_s": rate, "mfu": mfu, "batch_size": batch, "compiled": compiled,
                                "channels_last": channels_last}


def measure_sync_free(uri, model_cfg, cfg, dev, batch) -> None:
    """Steps fed by the resident loader must never make the host wait for the GPU."""
    from jetlib.data.loader import JetLoader

    loader = JetLoader(uri, "train", batch_size=batch, device=dev, mode="resident")
    step = make_step(model_cfg, cfg, dev, False, False)
    batches = iter(loader)
    step(next(batches).x)  # warm-up outside the check: allocator, cuDNN autotuning
    sync(dev)
    error = None
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _, b in zip(range(5), batches, strict=False):
            step(b.x)
    except RuntimeError as e:
        error = str(e).splitlines()[0][:300]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    emit("sync_free", sync_free=error is None, error=error, batch_size=batch)


def child_pretrain(argv) -> int:
    _tqdm_shim()
    from jetlib.cli import main

    return main(["pretrain", *argv])


def measure_pretrain(uri, out: Path, preset: str, dev) -> str:
    """``jetlib pretrain`` for 2 epochs, SIGKILLed once its first checkpoint is written, then re-run."""
    args = [sys.executable, __file__, "--child-pretrain", "--data", uri, "--out", str(out), "--preset", preset,
            "--epochs", "2", "--device", dev.type]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JETLIB_PROGRESS": "0"}
    log = out.parent / "pretrain.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env)
        pointer = out / "checkpoints" / "latest.json"
        while proc.poll() is None and not pointer.exists():
            time.sleep(0.05)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        t = time.perf_counter()
        rc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    text = log.read_text()
    if rc != 0:
        raise RuntimeError(f"jetlib pretrain exited {rc} after the kill (killed: {killed}): {text[-1500:]}")
    doc = json.loads((out / "metrics.json").read_text())
    epochs = [{k: e.get(k) for k in ("epoch", "loss", "jets_per_s", "knn_accuracy", "temperature")}
              for e in doc["epochs"]]
    emit("pretrain", ok=(out / "run.json").exists() and len(epochs) == 2, preset=preset, killed_after_checkpoint=killed,
         resumed="resuming" in text, rerun_s=round(time.perf_counter() - t, 1), epochs=epochs)
    return str(out)


def measure_finetune(uri, encoder: str, out: Path, preset: str, dev, epochs: int) -> None:
    from jetlib.evaluate import evaluate
    from jetlib.finetune import finetune, make_config

    cfg = make_config(preset, task="cls", mode="finetune", label_fraction=1.0, epochs=epochs)
    t = time.perf_counter()
    run = finetune(uri, str(out / "ft"), cfg, init=encoder, device=dev.type)
    seconds = time.perf_counter() - t
    result = evaluate(uri, str(out / "ft"), str(out / "eval"), device=dev.type)
    emit("finetune", preset=preset, epochs=run["training"]["epochs_run"],
         best_val=run["training"]["best_value"], test_roc_auc=result["scalars"]["roc_auc"],
         train_jets_per_s=round(run["training"]["train_jets_per_s"], 1), seconds=round(seconds, 1))


RESULTS: dict = {}
BATCHES: dict = {}
FAILED: list = []


def guarded(measure: str, fn, *args, **what):
    """Run one measurement; a failure becomes an ``error`` line and the run goes on (one device call
    must not lose every later figure to one bad measurement). The exit status is then 1."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported, then the next measurement runs
        import traceback

        FAILED.append(measure)
        emit(measure, **what, error=f"{type(e).__name__}: {str(e)[:500]}",
             where=traceback.format_exc().splitlines()[-3][:300])
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset folder or URI (jetlib ingest); --smoke makes a toy one")
    ap.add_argument("--out", help="scratch folder for the runs (default: a temporary one)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: the test suite's run")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-sizes", default="256,1024")
    ap.add_argument("--seconds", type=float, default=8.0, help="timing window per measurement")
    ap.add_argument("--peak-tflops", type=float, help="bf16 peak for MFU (default: from the GPU's name)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip what would start after this")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    if sys.argv[1:2] == ["--child-pretrain"]:  # the subprocess measure_pretrain starts (and kills)
        return child_pretrain(sys.argv[2:])
    args = ap.parse_args()
    _tqdm_shim()
    os.environ.setdefault("JETLIB_PROGRESS", "0")
    from jetlib.device import setup_device
    from jetlib.pretrain import make_config

    dev = setup_device("cpu" if args.smoke else args.device)
    scratch = Path(args.out or tempfile.mkdtemp(prefix="jetlib-gpu-"))
    scratch.mkdir(parents=True, exist_ok=True)
    preset = "tiny" if args.smoke else "gpu"
    sizes = (8, 16) if args.smoke else tuple(int(b) for b in args.batch_sizes.split(","))
    seconds = 0.3 if args.smoke else args.seconds
    uri = args.data or (toy_dataset(scratch) if args.smoke else ap.error("--data is required without --smoke"))
    from jetlib.data.manifest import open_dataset

    ds = open_dataset(uri)
    cfg = make_config(preset)
    model_cfg = replace(cfg.model, in_channels=ds.image_shape[0])
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    peak = args.peak_tflops or next((p for key, p in PEAK_TFLOPS if key in name), None)
    flops = flops_per_jet(model_cfg, cfg, dev)
    emit("env", torch=torch.__version__, cuda=torch.version.cuda, device=name, device_type=dev.type,
         memory_gb=round(torch.cuda.get_device_properties(dev).total_memory / 1e9, 1) if dev.type == "cuda" else None,
         cores=os.cpu_count(), preset=preset, dataset=ds.manifest["id"], train_jets=ds.rows("train"),
         flops_per_jet=flops, peak_tflops=peak, cudnn_benchmark=torch.backends.cudnn.benchmark)

    def budget(measure: str, **what) -> bool:
        if time.perf_counter() - T0 > args.budget_s:
            emit(measure, **what, skipped="time budget")
            return False
        return True

    if budget("loader"):
        guarded("loader", measure_loader, uri, dev, max(sizes), seconds)
    def steps(compiled: bool) -> None:
        for batch in sizes:
            for channels_last in (False, True):
                what = {"batch_size": batch, "compiled": compiled, "channels_last": channels_last}
                if dev.type == "cpu" and (compiled or channels_last):
                    # CPU: compiling takes minutes; channels_last can hang oneDNN (see jetlib/pretrain.py)
                    emit("step", **what, skipped="cpu")
                elif budget("step", **what):
                    guarded("step", measure_step, uri, model_cfg, cfg, dev, batch, compiled, channels_last,
                            seconds, flops, peak, **what)

    steps(compiled=False)
    if dev.type != "cuda":
        emit("sync_free", skipped="cpu")
    elif budget("sync_free"):
        guarded("sync_free", measure_sync_free, uri, model_cfg, cfg, dev, min(sizes))
    encoder = ""
    if budget("pretrain"):
        encoder = guarded("pretrain", measure_pretrain, uri, scratch / "pretrain", preset, dev)
    if encoder and budget("finetune"):
        guarded("finetune", measure_finetune, uri, encoder, scratch, preset, dev,
                1 if args.smoke else args.finetune_epochs)
    if not args.smoke:  # compiling costs the most device time: last, within what the budget leaves
        from jetlib.device import prepare_compile

        guarded("compile", prepare_compile, dev)
    steps(compiled=True)
    best, loader = RESULTS.get("best_step"), RESULTS.get("loader", {})
    emit("summary", best_step=best, loader_jets_per_s=loader,
         loader_margin=round(max(loader.values()) / best["jets_per_s"], 2) if best and loader else None,
         goal_jets_per_s=60000, goal_loader_margin=2.0, failed=FAILED)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
