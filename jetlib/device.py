"""Which device a step runs on, how it is set up, and whether it runs under bf16 autocast.

* :func:`setup_device` binds the process to the GPU it was asked for: outside torchrun
  ``--device cuda:1`` means cuda:1 (not cuda:0, the process's default device), under
  torchrun each rank takes ``cuda:LOCAL_RANK``. On CUDA it turns on cuDNN's autotuner
  (``torch.backends.cudnn.benchmark``): training batches have one shape, so the fastest
  convolution algorithm is searched once per shape and reused.
* :func:`prepare_compile` makes ``--compile`` work where the home directory is read-only
  (the pods' root filesystem): it points inductor's and Triton's caches at a writable
  folder when the user has not, and says in one line what is missing (a C compiler,
  Python's headers) before any training starts.
* Channels-last is off unless asked for (``channels_last=on``): on CUDA, GroupNorm makes
  its input contiguous (NCHW) and returns NCHW, forward and backward, so every norm of
  a channels-last network costs two layout copies (``native_group_norm`` in PyTorch's
  ``aten/src/ATen/native/group_norm.cpp``: ``Contiguous`` unless the device is the CPU),
  and ``grid_sample`` (the augmentations) returns NCHW whatever its input. ``benchmarks/gpu.py``
  measures both layouts, eager and compiled; turn it on where that measurement shows a win.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sysconfig
import tempfile
from pathlib import Path

import torch

from jetlib import dist
from jetlib.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; refuses CUDA without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}, but no GPU is visible to PyTorch")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}, but PyTorch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device(name)


def setup_device(name: str, distributed: bool = False) -> torch.device:
    """Resolve ``name`` and make it this process's current device; with ``distributed`` also join the
    process group torchrun describes (:func:`jetlib.dist.setup`). Returns the device to train on."""
    dev = resolve_device(name)
    if distributed and dist.launched():
        chosen = dist.setup(dev)
        if dev.type == "cuda" and dev.index is not None and dev.index != chosen.index:
            log.warning("--device %s ignored under torchrun: rank %d uses %s (by its LOCAL_RANK)", dev,
                        dist.rank(), chosen)
        dev = chosen
    elif dev.type == "cuda":
        dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(dev)  # what autocast, RNG states and new tensors without a device use
    elif distributed:
        dev = dist.setup(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: autotune each convolution once
    return dev


def channels_last_for(setting: str) -> bool:
    """``on`` / ``off``; ``auto`` is off (see the module docstring for the GroupNorm measurement to make)."""
    return setting == "on"


def as_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """The network's input in its layout: converted once, after the augmentations (grid_sample gives NCHW)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def autocast_for(device: torch.device, amp: str):
    """A context-manager factory: bf16 autocast for ``amp=bf16``, or ``auto`` on CUDA; otherwise a no-op."""
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def inference_autocast(device: torch.device, amp: str):
    """Scoring's autocast: the training's on CUDA; float32 on the CPU, where bf16 autocast is a training
    speed-up only, so that a model's scores there equal its exported ONNX graph's (float32) to 1e-5."""
    return autocast_for(device, amp if device.type == "cuda" else "off")


def cpu_amp(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The cpu presets' ``amp``: ``bf16`` where the CPU computes bf16 natively (AVX-512 BF16 or AMX, read
    from Linux's CPU flags), where bf16 autocast halves a step's CPU time (docs/speed.md); ``off``
    elsewhere, where bf16 is emulated and slower."""
    try:
        with open(cpuinfo) as f:
            flags = set(f.read().split())
    except OSError:
        return "off"
    return "bf16" if flags & {"avx512_bf16", "amx_bf16"} else "off"


def _writable(path: Path) -> bool:
    """True when a file can be created in ``path`` (made if missing): tried, since ``os.access`` says yes
    to root on a read-only mount's permission bits."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            return True
    except OSError:
        return False


def compile_cache_root(env=os.environ) -> Path:
    """Where compile caches go: ``JETLIB_CACHE``, else ``~/.cache/jetlib``, else ``$TMPDIR/jetlib-<uid>``:
    the first one writable."""
    candidates = []
    if env.get("JETLIB_CACHE"):
        candidates.append(Path(env["JETLIB_CACHE"]))
    if env.get("HOME"):
        candidates.append(Path(env["HOME"]) / ".cache" / "jetlib")
    candidates.append(Path(env.get("TMPDIR") or tempfile.gettempdir()) / f"jetlib-{os.getuid()}")
    for path in candidates:
        if _writable(path):
            return path
    raise ConfigError("--compile needs a writable cache folder: none of " + ", ".join(map(str, candidates))
                      + " is writable; set JETLIB_CACHE or TORCHINDUCTOR_CACHE_DIR to one that is")


def prepare_compile(device: torch.device, env=os.environ) -> dict[str, str]:
    """Check what ``torch.compile`` needs on ``device`` and set its cache folders; returns what it set.

    Inductor caches under ``TORCHINDUCTOR_CACHE_DIR``, by default ``$TMPDIR/torchinductor_<user>``
    (``torch/_inductor/runtime/cache_dir_utils.py``, ``cache_dir`` / ``default_cache_dir``); Triton
    under ``TRITON_CACHE_DIR``, by default ``$TRITON_HOME/.triton/cache`` with ``TRITON_HOME`` = ``~``
    (``triton/knobs.py``, ``cache_knobs``), and it builds a launcher with the C compiler ``$CC`` or
    gcc/clang against ``Python.h`` (``triton/runtime/build.py``, ``_build``). Inductor on CPU
    compiles C++ (``$CXX`` or g++/clang++). Variables the user set are kept.

    Raises:
        ConfigError: no compiler, no Python headers, or no writable folder (one line).
    """
    need = ("CXX", ("g++", "clang++")) if device.type == "cpu" else ("CC", ("gcc", "clang"))
    var, names = need
    if not (env.get(var) and shutil.which(env[var])) and not any(shutil.which(n) for n in names):
        raise ConfigError(f"--compile on {device.type} needs a {'C++' if var == 'CXX' else 'C'} compiler "
                          f"({' or '.join(names)}, or ${var}); none found: install one or drop --compile")
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not include.is_file():
        raise ConfigError(f"--compile needs Python's C headers ({include} is missing): install python3-dev "
                          f"or drop --compile")
    if device.type == "cpu" and torch.backends.mkldnn.enabled:
        # torch 2.14.1: oneDNN's convolution backward, called from inductor's compiled CPU graph on the
        # ResNet-15's stride-2 1x1 shortcut, aborts with "double free or corruption" (seen in
        # tests/docker/test_image.py::test_compile_works_in_a_read_only_container and on the host);
        # ATen's own convolution does not. Eager CPU runs keep oneDNN.
        torch.backends.mkldnn.enabled = False
        log.warning("--compile on cpu: oneDNN convolutions off (its backward crashes under inductor in "
                    "torch %s)", torch.__version__)
    wanted = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TRITON_HOME")
    if all(env.get(k) for k in wanted):
        return {}
    root = compile_cache_root(env)
    values = {"TORCHINDUCTOR_CACHE_DIR": root / "inductor", "TRITON_CACHE_DIR": root / "triton" / "cache",
              "TRITON_HOME": root / "triton"}
    done = {}
    for key, path in values.items():
        if not env.get(key):
            env[key] = done[key] = str(path)
    return done


def cgroup_memory_limit() -> int | None:
    """This process's memory limit from cgroup v2 or v1, or None when unlimited or unknown."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "unlimited"
            return int(text)
    return None


def device_memory_bytes(device: torch.device) -> int:
    """The memory the ``auto`` rule shares out: the GPU's total memory on CUDA; on CPU the physical RAM,
    or the cgroup limit when lower (a pod's limit), divided by the processes of this node
    (``LOCAL_WORLD_SIZE``, set by torchrun), since each rank holds its own copy."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit()
    return min(ram, limit or ram) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
