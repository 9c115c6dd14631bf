"""Shared benchmark helpers: model specs, machine description, peak-memory probes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from bioxlstm.cpuinfo import cpu_flags, cpu_vendor
from bioxlstm.cpuinfo import cpu_model as cpuinfo_model
from bioxlstm.layers.dense import onednn_preferred

TRANSFORMER_PREFIX = "transformer:"
REFERENCE_PREFIX = "reference:"
COMPILED_PREFIX = "compiled:"
DEFAULT_MODELS = ("dna-xlstm-500k", "transformer:dna-xlstm-500k",
                  "dna-xlstm-4m", "transformer:dna-xlstm-4m")
REFERENCE_MODELS = ("reference:dna-xlstm-500k", "reference:dna-xlstm-4m")
STARTUP_GRACE_S = 60.0


@dataclass
class ModelSpec:
    """What a worker process needs to rebuild a model: its name, kind and config."""

    name: str
    kind: str
    config: dict[str, Any]
    params: int
    sized_from: str = ""
    skip: str = ""  # why every case of this model is skipped without running (e.g. not installed)
    compile: bool = False  # run it through torch.compile (`compiled:<model>`)


def xlstm_model(preset_name: str, seq_len: int | None = None, **overrides: Any) -> nn.Module:
    """The xLSTM preset, its context length raised to seq_len if that is longer."""
    from bioxlstm.config import preset
    from bioxlstm.model import XLSTMLanguageModel

    config = preset(preset_name, **overrides)
    if seq_len is not None and seq_len > config.context_length:
        config = preset(preset_name, **{**overrides, "context_length": seq_len})
    return XLSTMLanguageModel(config)


def default_models() -> list[str]:
    """DEFAULT_MODELS, and the reference library's models of the same shapes when it is installed
    (the optional benchmark extra), so `make bench` compares against it wherever it can."""
    from reference_xlstm import missing

    return [*DEFAULT_MODELS, *(() if missing() else REFERENCE_MODELS)]


def resolve(name: str) -> ModelSpec:
    """Turn `<preset>` (an xLSTM), `transformer:<preset>` (a Transformer as large) or
    `reference:<preset>` (the reference xlstm library's model of that shape) into a spec;
    `compiled:<any of these>` is that model run through torch.compile."""
    from bioxlstm.baselines import transformer_like
    from bioxlstm.config import NOMINAL_PARAMS, preset

    if name.startswith(COMPILED_PREFIX):
        return dataclasses.replace(resolve(name.removeprefix(COMPILED_PREFIX)), name=name,
                                   compile=True)
    if name.startswith(REFERENCE_PREFIX):
        return resolve_reference(name)
    target = name.removeprefix(TRANSFORMER_PREFIX)
    base = preset(target)
    if not name.startswith(TRANSFORMER_PREFIX):
        return ModelSpec(name, "xlstm", {"preset": target}, count(xlstm_model(target)))
    try:
        params, sized_from = count(xlstm_model(target)), f"{target} (built)"
    except ImportError:
        params, sized_from = NOMINAL_PARAMS[target], f"{target} (nominal size)"
    config = transformer_like(params, base.vocab_size, base.context_length)
    return ModelSpec(name, "transformer", asdict(config), config.num_parameters(), sized_from)


def resolve_runnable(models: str, kinds: tuple[str, ...] = ("xlstm", "transformer", "reference")
                     ) -> list[ModelSpec]:
    """Specs of comma-separated model names, for a script that runs all of them in one process:
    exits with the reason if one is skipped (e.g. not installed) or of a kind it cannot run."""
    specs = [resolve(name.strip()) for name in models.split(",") if name.strip()]
    for spec in specs:
        if spec.skip:
            sys.exit(f"{spec.name}: {spec.skip}")
        if spec.kind not in kinds:
            sys.exit(f"{spec.name}: this benchmark runs only {', '.join(kinds)} models")
    return specs


def build(spec: ModelSpec, seq_len: int) -> nn.Module:
    """Instantiate the model a spec describes, able to take seq_len tokens (compiled with
    torch.compile for a `compiled:` spec: its first calls compile, so keep them out of timings)."""
    if spec.kind == "xlstm":
        model = xlstm_model(spec.config["preset"], seq_len)
    elif spec.kind == "reference":
        from reference_xlstm import reference_model

        model = reference_model(spec.config["preset"], seq_len)
    else:
        from bioxlstm.baselines import TransformerConfig, TransformerLanguageModel

        model = TransformerLanguageModel(TransformerConfig(**spec.config))
    return torch.compile(model) if spec.compile else model


def resolve_reference(name: str) -> ModelSpec:
    """Spec of `reference:<preset>`; when the library is missing, a spec whose cases are skipped."""
    from reference_xlstm import missing, reference_params

    from bioxlstm.config import preset

    target = name.removeprefix(REFERENCE_PREFIX)
    preset(target)  # an unknown preset is an error even without the library
    config = {"preset": target}
    reason = missing()
    if reason:
        return ModelSpec(name, "reference", config, 0, skip=f"skipped: {reason}")
    import xlstm

    return ModelSpec(name, "reference", config, reference_params(target),
                     f"xlstm {xlstm.__version__} xLSTMLMModel shaped like {target}")


def count(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def build_kernels_first(device: str, specs: list[ModelSpec]) -> None:
    """On CPU, build every optional kernel before any worker starts: a first build takes 25-60 s
    per kernel, which would count against a case's time budget, and a worker killed mid-build
    would leave torch's build lock behind for every later worker to wait on. Nothing is built
    when every model is skipped anyway (e.g. only the reference library, not installed)."""
    if device != "cpu" or all(spec.skip for spec in specs):
        return
    from bioxlstm.layers.cpu_kernels import build_cpu_kernels

    missing = [name for name, ok in build_cpu_kernels().items() if not ok]
    if missing:
        print(f"CPU kernels unavailable, their PyTorch forms run: {', '.join(missing)}",
              file=sys.stderr)


def setup_worker(threads: int | None) -> None:
    """What every measuring process does first: its thread count, and the training allocator
    setting of `bioxlstm.allocator` (as the CLI and Trainer use; BIOXLSTM_MALLOC=system: not)."""
    from bioxlstm.allocator import retain_freed_memory

    if threads:
        torch.set_num_threads(threads)
    retain_freed_memory()


def machine_info(device: str) -> dict[str, Any]:
    """CPU model, cores, memory, accelerator, and software versions of this machine."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_vendor": cpu_vendor(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_features": cpu_features(),
        "dense_float32": "onednn" if onednn_preferred() else "blas",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(proc_kib("/proc/meminfo", "MemTotal") / 2**20, 1)
        if os.path.exists("/proc/meminfo") else None,
        "device": device,
        "malloc": "system" if os.environ.get("BIOXLSTM_MALLOC", "").lower() == "system"
        else "retain_freed_memory",
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


MATMUL_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_features() -> list[str]:
    """Which of the instruction sets that decide matmul speed (MATMUL_FEATURES) this CPU has."""
    flags = cpu_flags()
    return [name for name in MATMUL_FEATURES if name in flags]


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    return cpuinfo_model() or platform.processor() or platform.machine()


def proc_kib(path: str, key: str) -> int:
    """A `Key: N kB` field of a /proc file, in KiB."""
    with open(path) as f:
        match = re.search(rf"^{key}:\s+(\d+)", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"{key} not in {path}")
    return int(match.group(1))


class PeakMemory:
    """Peak memory growth from construction on: CUDA allocator stats, else process RSS.

    CPU: on Linux the RSS high-water mark (VmHWM) is reset through /proc/self/clear_refs, so the
    peak is exact from now on; elsewhere only growth of ru_maxrss above the process's earlier peak
    is seen (a lower bound; run each case in a fresh process to keep earlier peaks small).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated"
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = proc_kib("/proc/self/status", "VmRSS") * 1024
            self.method = "VmHWM - VmRSS after resetting the high-water mark (clear_refs)"
        except OSError:
            self.base = max_rss_bytes()
            self.method = "ru_maxrss growth above the earlier peak (a lower bound)"

    def peak_mib(self) -> float:
        """Peak memory above the starting level so far, in MiB."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.method.startswith("VmHWM"):
            peak = proc_kib("/proc/self/status", "VmHWM") * 1024
        else:
            peak = max_rss_bytes()
        return max(0, peak - self.base) / 2**20


def max_rss_bytes() -> int:
    """The process's peak resident set size so far (ru_maxrss, in bytes)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run_worker(script: str, case: dict[str, Any]) -> tuple[str, str]:
    """Run `script --worker <case>`: its stdout, and why it ended early if it did."""
    cmd = [sys.executable, script, "--worker", json.dumps(case)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=case["max_seconds"] + STARTUP_GRACE_S)
        return out, describe_exit(proc.returncode, err)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return out, f"skipped: over --max-seconds {case['max_seconds']:g} (worker killed)"


def describe_exit(returncode: int, stderr: str) -> str:
    """Why a worker ended without reporting every phase."""
    if returncode < 0:
        return f"skipped: worker killed by signal {-returncode} (out of memory?)"
    tail = stderr.strip().splitlines()[-1:] or ["no output"]
    return f"error: worker exited with {returncode}: {tail[0][:200]}"


def sync(device: str) -> None:
    """Wait for queued CUDA work, so wall-clock timings cover it."""
    if device == "cuda":
        torch.cuda.synchronize()


def tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested lists, tuples, dicts and dataclasses."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors(item)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from tensors(getattr(obj, f.name))


def tensor_bytes(obj: Any) -> int:
    """Bytes of the elements of every tensor in obj (views count only their own elements)."""
    return sum(t.numel() * t.element_size() for t in tensors(obj))


def storage_bytes(obj: Any) -> int:
    """Bytes of the distinct storages the tensors in obj keep alive (a view keeps its base)."""
    storages = {(t.device, t.untyped_storage().data_ptr()): t.untyped_storage().nbytes()
                for t in tensors(obj)}
    return sum(storages.values())


def out_of_memory(err: BaseException) -> bool:
    """Whether an error is an allocation failure (CUDA's or the CPU allocator's)."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err) \
        or "can't allocate" in str(err)


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """--device: cpu, cuda, or auto (cuda when available)."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="cuda when available under auto (default)")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark shares: --quick, --device, --dtype, --threads."""
    parser.add_argument("--quick", action="store_true", help="short smoke run with small "
                        "defaults (each still overridable)")
    add_device_arg(parser)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="parameter and activation dtype (default float32)")
    add_threads_arg(parser)


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    """--threads: the torch CPU threads of the measuring process."""
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def add_paired_args(parser: argparse.ArgumentParser) -> None:
    """--models (the first is the baseline of the ratios) and --threads, for the paired scripts."""
    parser.add_argument("--models", default="dna-xlstm-4m,transformer:dna-xlstm-4m",
                        help="comma-separated models, named as in throughput.py; the first is "
                        "the baseline of the ratios (default: %(default)s)")
    add_threads_arg(parser)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """--json for the results, and the hidden --worker used to run one case in a subprocess."""
    parser.add_argument("--json", metavar="OUT", help="also write results and machine info here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
