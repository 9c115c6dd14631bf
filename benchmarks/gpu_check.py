"""The GPU check of issue #22, as one budgeted run: the driver behind benchmarks/gpu_check.sh.

    python benchmarks/gpu_check.py run [--dry-run] [--budget S] [--parts a,b] [--skip a,b]
    python benchmarks/gpu_check.py wheels       # does the wheelhouse cover what the GPU machine lacks?
    python benchmarks/gpu_check.py env          # device, driver and package versions
    python benchmarks/gpu_check.py summary RESULTS_JSON   # the tables again, from a results.json
    python benchmarks/gpu_check.py plan [--dry-run]       # the parts, their limits and commands

`run` goes through PARTS in order of priority: install (pip, offline, from benchmarks/wheels/),
env, the GPU tests, then the benchmarks (paired.py, paired_generation.py and cell.py with
--device cuda), each in its own process group under its own time limit and the budget left. A
part that fails or times out is recorded and the run goes on; the exit status is 1 if any part was
not ok. After every part `results.json` (every part's status and JSON) and `summary.md` (the
tables, with the issue's targets) are rewritten under --out, so a run cut short keeps what it had.

--dry-run runs the same parts on the CPU with tiny models and sizes and the GPU-only steps left
out: pip resolves without installing, the GPU tests run their own code on the CPU
(BIOXLSTM_GPU_TESTS_ON=cpu), the benchmarks take --device cpu.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
WHEELS = BENCH / "wheels"
WHEELHOUSE_LIMIT_MIB = 48  # the carried wheels; the working tree travels beside them (64 MiB in all)
DEFAULT_BUDGET_S = {"gpu": 480.0, "dry": 1200.0}
FLOOR_S = 15.0  # a part is not started with less time than this left

# The GPU machine (KINDS.md, "Python packages already there", read 2026-11-17, with the versions a
# session's pip list showed); None: there, version not recorded. Python 3.12.3, x86-64 Linux.
GPU_PYTHON = (3, 12)
GPU_VERSIONS = {"torch": "2.11.0", "triton": "3.6.0", "numpy": "2.5.2", "safetensors": "0.8.0",
                "huggingface-hub": "1.33.0", "jax": "0.11.2", "transformers": "5.17.0",
                "tokenizers": "0.23.2", "accelerate": "1.15.0"}
GPU_PACKAGES = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax
e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp""".split()

# the issue's targets
TRAIN_TARGETS = {4096: 1.0, 32768: 3.0}  # xLSTM tokens/s over the same-size Transformer's
GENERATION_TARGET = (32768, 5.0)  # times faster per token than the KV-cache Transformer, at 32k
CELL_TARGET = 1.5  # bioxlstm's cell at most this many times mlstm_kernels' fastest chunkwise kernel

GPU_PAIRS = ("dna-xlstm-4m", "prot-xlstm-26m", "prot-xlstm-102m")
DRY_PAIRS = ("tiny-mlstm", "tiny-prot-xlstm")


def pair_models(names: tuple[str, ...]) -> str:
    return ",".join(f"transformer:{n},{n}" for n in names)


@dataclass
class Part:
    """One step of the check: a command with its time limit (cap_s), and the JSON it writes."""

    name: str
    cap_s: float
    command: list[str]
    result: str = ""  # file name (in the work directory) of the JSON the command writes
    env: dict[str, str] = field(default_factory=dict)
    kind: str = ""  # how summary() reads its JSON
    junit: str = ""  # file name (under --out) of the junit XML a pytest part writes


def parts(dry: bool, work: Path, out: Path) -> list[Part]:
    """Every part of the check, most important first: correctness, then the issue's targets."""
    py, me = sys.executable, str(Path(__file__).resolve())
    script = lambda name: str(BENCH / name)  # noqa: E731
    plan = [Part("install", 120, [py, me, "install", "--json", str(work / "install.json")]
                 + (["--dry-run"] if dry else []), "install.json", kind="install"),
            Part("env", 30, [py, me, "env", "--json", str(work / "env.json")], "env.json",
                 kind="env")]
    pytest = [py, "-m", "pytest", "-v", "-rfEs", "-o", "addopts=", "-p", "no:cacheprovider"]
    tests_env = ({"BIOXLSTM_GPU_TESTS_ON": "cpu", "BIOXLSTM_DENSE": "blas"} if dry
                 else {"BIOXLSTM_REQUIRE_GPU": "1"})
    # the file, not the folder: collecting every test module would import optional packages that
    # the GPU machine may lack, and one collection error stops pytest before any test runs
    plan.append(Part("tests", 400 if dry else 210,
                     [*pytest, "-m", "gpu", "--junitxml", str(out / "junit.xml"),
                      "tests/test_gpu.py"], env=tests_env, junit="junit.xml"))
    plan.append(Part("tests-triton", 120 if dry else 60,
                     [*pytest, "--junitxml", str(out / "junit-triton.xml"),
                      "tests/test_mlstm_triton.py"], env=tests_env, junit="junit-triton.xml"))
    device = ["--device", "cpu" if dry else "cuda"]

    def throughput(S: int, cap: float) -> Part:
        sizes = (["--batch-tokens", "128", "--rounds", "2", "--warmup", "1"] if dry else
                 ["--batch-tokens", "32768", "--rounds", "5", "--warmup", "1"])
        return Part(f"throughput-{S}", cap,
                    [py, script("paired.py"), *device, "--bf16", "--roofline", "--seq-len", str(S),
                     "--models", pair_models(DRY_PAIRS if dry else GPU_PAIRS), *sizes,
                     "--json", str(work / f"throughput-{S}.json")], f"throughput-{S}.json",
                    kind="throughput")

    def generation(context: int, cap: float) -> Part:
        models = "tiny-mlstm,transformer:tiny-mlstm" if dry else \
            "dna-xlstm-4m,transformer:dna-xlstm-4m,prot-xlstm-26m,transformer:prot-xlstm-26m"
        sizes = ["--rounds", "3", "--tokens-per-round", "2", "--warmup", "1"] if dry else \
            ["--rounds", "10", "--tokens-per-round", "8", "--warmup", "8"]
        return Part(f"generation-{context}", cap,
                    [py, script("paired_generation.py"), *device, "--context", str(context),
                     "--models", models, *sizes, "--json", str(work / f"generation-{context}.json")],
                    f"generation-{context}.json", kind="generation")

    def cell(label: str, cap: float, shape: tuple[int, int, int, int], extra: list[str]) -> Part:
        B, NH, S, DH = shape
        packages = "native_autograd,native_autograd@32" if dry else \
            "triton_xl_chunk@64,triton_xl_chunk@128,triton_limit_chunk"
        precision = [] if dry else ["--dtype", "bfloat16", *extra]
        rounds = ["--rounds", "2", "--warmup", "1"] if dry else ["--rounds", "10", "--warmup", "2"]
        return Part(f"cell-{label}", cap,
                    [py, script("cell.py"), *device, "--dispatcher", "--batch", str(B), "--heads",
                     str(NH), "--seq-len", str(S), "--head-dim", str(DH), "--chunk",
                     "32" if dry else "64", *rounds, *precision, "--package", packages,
                     "--json", str(work / f"cell-{label}.json")], f"cell-{label}.json", kind="cell")

    compile_models = "transformer:tiny-mlstm,tiny-mlstm,compiled:tiny-mlstm" if dry else \
        "transformer:dna-xlstm-4m,dna-xlstm-4m,compiled:dna-xlstm-4m"
    compile_sizes = ["--seq-len", "64", "--batch-tokens", "128", "--rounds", "2"] if dry else \
        ["--seq-len", "4096", "--batch-tokens", "32768", "--rounds", "5"]
    compile_part = Part("compile", 240 if dry else 110,
                        [py, script("paired.py"), *device, "--bf16", "--warmup", "2",
                         "--models", compile_models, *compile_sizes,
                         "--json", str(work / "compile.json")], "compile.json",
                        env={"BIOXLSTM_DENSE": "blas"} if dry else {}, kind="compile")
    if dry:
        plan += [throughput(64, 120), throughput(128, 120), generation(64, 90),
                 cell("bf16", 90, (1, 2, 128, 16), []), compile_part]
    else:
        plan += [throughput(4096, 60), throughput(32768, 80), generation(32768, 45),
                 cell("bf16", 40, (8, 4, 4096, 128), []), generation(8192, 35),
                 throughput(1024, 50), throughput(16384, 60),
                 cell("autocast", 35, (8, 4, 4096, 128), ["--autocast"]), compile_part,
                 cell("prot", 40, (2, 4, 8192, 256), [])]
    return plan


# ---------------------------------------------------------------------------------------------
# run


def run_part(part: Part, limit: float, env: dict[str, str]) -> tuple[str, int | None, float]:
    """Run a part's command in its own process group, its output passed through; killed at the
    limit. Returns (status, return code, seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen(part.command, cwd=REPO, env={**env, **part.env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1,
                            start_new_session=True)

    def copy() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    try:
        returncode = proc.wait(timeout=limit)
        status = "ok" if returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        returncode, status = proc.returncode, "timeout"
    reader.join(timeout=5)
    return status, returncode, time.monotonic() - start


def child_env(dry: bool, extra_path: str = "") -> dict[str, str]:
    """The environment of every part: the working tree's src first on PYTHONPATH (so this tree's
    bioxlstm runs whatever is installed), unbuffered output, and any --target site of install."""
    env = dict(os.environ)
    paths = [str(REPO / "src"), *([extra_path] if extra_path else []),
             *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")
    return env


def select(plan: list[Part], only: str, skip: str, parser: argparse.ArgumentParser,
           dry: bool = True) -> list[Part]:
    """The parts named by --parts (all by default) less --skip; on a GPU, install and env always
    come too unless skipped, since every run starts on a bare machine."""
    names = [p.name for p in plan]
    wanted = [n.strip() for n in only.split(",") if n.strip()] or names
    if not dry:
        wanted += ["install", "env"]
    unwanted = [n.strip() for n in skip.split(",") if n.strip()]
    unknown = sorted(set(wanted + unwanted) - set(names))
    if unknown:
        parser.error(f"unknown parts {', '.join(unknown)}; parts: {', '.join(names)}")
    return [p for p in plan if p.name in wanted and p.name not in unwanted]


def cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    dry = args.dry_run
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else REPO / "benchmarks" / "results" / \
        "gpu_check_work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    plan = select(parts(dry, work, out), args.parts, args.skip, parser, dry)
    budget = args.budget if args.budget else DEFAULT_BUDGET_S["dry" if dry else "gpu"]
    began, started_at = time.monotonic(), time.strftime("%Y-%m-%d %H:%M:%S %z")
    results: dict[str, Any] = dict(mode="dry-run" if dry else "gpu", started=started_at,
                                   budget_s=budget, python=sys.executable, parts=[], data={})
    print(f"gpu_check: {'DRY RUN on the CPU' if dry else 'GPU run'}, budget {budget:.0f} s, "
          f"parts {', '.join(p.name for p in plan)}; results in {out}", flush=True)
    extra_path = ""
    for part in plan:
        for stale in (work / part.result if part.result else None,
                      out / part.junit if part.junit else None):
            if stale is not None:
                stale.unlink(missing_ok=True)
        left = budget - (time.monotonic() - began)
        limit = min(part.cap_s, left)
        record: dict[str, Any] = dict(name=part.name, limit_s=round(limit, 1),
                                      command=" ".join(part.command), env=part.env)
        if left < min(FLOOR_S, part.cap_s):
            record.update(status="skipped", reason=f"budget: {left:.0f} s left of {budget:.0f}")
            print(f"\n=== {part.name}: SKIPPED, {record['reason']}", flush=True)
        else:
            print(f"\n=== {part.name} (limit {limit:.0f} s; {left:.0f} s of the budget left)\n"
                  f"$ {record['command']}", flush=True)
            start = time.monotonic()
            try:
                finish_part(part, limit, record, results, work, out, child_env(dry, extra_path))
            except Exception as err:  # noqa: BLE001 - a fault of this driver loses one part only
                record.update(status="failed", reason=f"gpu_check itself: {type(err).__name__}: "
                              f"{str(err)[:300]}")
            extra_path = results["data"].get("install", {}).get("pythonpath", "") or extra_path
            mark = "ok" if record["status"] == "ok" else f"{record['status'].upper()}: " \
                f"{record.get('reason', '')}"
            print(f"=== {part.name}: {mark} ({time.monotonic() - start:.0f} s)", flush=True)
        results["parts"].append(record)
        results["elapsed_s"] = round(time.monotonic() - began, 1)
        write_results(results, out)
    not_ok = [p for p in results["parts"] if p["status"] != "ok"]
    print("\n" + safe_summary(results))
    print(f"gpu_check: {len(results['parts']) - len(not_ok)}/{len(results['parts'])} parts ok in "
          f"{results['elapsed_s']:.0f} s" + (f"; NOT OK: {', '.join(p['name'] for p in not_ok)}"
                                             if not_ok else ""))
    return 1 if not_ok else 0


def finish_part(part: Part, limit: float, record: dict[str, Any], results: dict[str, Any],
                work: Path, out: Path, env: dict[str, str]) -> None:
    """Run one part and record its status, seconds, reason and JSON (or junit summary)."""
    status, returncode, seconds = run_part(part, limit, env)
    record.update(status=status, returncode=returncode, seconds=round(seconds, 1))
    if part.result:
        path = work / part.result
        if path.exists():
            try:
                results["data"][part.name] = json.loads(path.read_text())
            except ValueError as err:
                record.update(status="failed", reason=f"{part.result} is not JSON ({err})")
        elif status == "ok":
            record.update(status="failed", reason=f"{part.result} was not written")
    if part.junit:
        results["data"][part.name] = dict(junit=junit_summary(out / part.junit))
    if status == "timeout":
        record["reason"] = f"killed after {limit:.0f} s"
    elif status == "failed" and "reason" not in record:
        record["reason"] = f"exit status {returncode}"


def safe_summary(results: dict[str, Any]) -> str:
    try:
        return summary(results)
    except Exception as err:  # noqa: BLE001 - the numbers stay in results.json
        return f"(the summary failed: {type(err).__name__}: {err}; see results.json)\n"


def write_results(results: dict[str, Any], out: Path) -> None:
    for name, text in (("results.json", json.dumps(results, indent=1)),
                       ("summary.md", safe_summary(results))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


# ---------------------------------------------------------------------------------------------
# install and the wheelhouse


def cmd_install(args: argparse.Namespace) -> int:
    """pip install -e .[gpu] from the wheelhouse, offline (with --dry-run: resolve only); on a
    refusal, mlstm_kernels alone into a --target folder for PYTHONPATH."""
    report: dict[str, Any] = dict(dry_run=args.dry_run, wheels=wheel_files(WHEELS))
    ok = check_wheelhouse(WHEELS, report, installed_here=not args.dry_run)
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(WHEELS),
           "--disable-pip-version-check", "--no-input"]
    command = [*pip, *(["--dry-run"] if args.dry_run else []), "-e", f"{REPO}[gpu]"]
    print("$ " + " ".join(command), flush=True)
    proc = subprocess.run(command, cwd=REPO, text=True, capture_output=True)
    print(proc.stdout[-4000:] + proc.stderr[-4000:], flush=True)
    report["pip"] = dict(command=" ".join(command), returncode=proc.returncode)
    if proc.returncode != 0:
        ok = False
        if not args.dry_run:
            site = "/tmp/bioxlstm-site"
            fallback = [*pip, "--no-deps", "--target", site,
                        *map(str, sorted(WHEELS.glob("mlstm_kernels-*.whl")))]
            print("FAILED: pip install -e; falling back to " + " ".join(fallback), flush=True)
            done = subprocess.run(fallback, cwd=REPO, text=True, capture_output=True)
            print(done.stdout[-2000:] + done.stderr[-2000:], flush=True)
            if done.returncode == 0:
                report["pythonpath"] = site
    probe = ("import bioxlstm, mlstm_kernels, torch; "
             "from bioxlstm.layers.mlstm_triton import package_kernel; "
             "print('bioxlstm from', bioxlstm.__file__); "
             "print('mlstm_kernels', getattr(mlstm_kernels, '__version__', '?'), 'from', "
             "mlstm_kernels.__file__); "
             "ok = package_kernel('chunkwise--triton_xl_chunk') is not None; "
             "print('Triton chunkwise kernel importable:', ok); "
             f"raise SystemExit(0 if ok or {args.dry_run} else 1)")
    env = child_env(args.dry_run, report.get("pythonpath", ""))
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, text=True,
                          capture_output=True)
    print(done.stdout + done.stderr[-2000:], flush=True)
    report["import_check"] = dict(returncode=done.returncode, output=done.stdout[-2000:])
    if done.returncode != 0:
        ok = False
    report["ok"] = ok
    Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


def wheel_files(folder: Path) -> list[dict[str, Any]]:
    return [dict(file=p.name, mib=round(p.stat().st_size / 2**20, 2))
            for p in sorted(folder.glob("*.whl"))]


def gpu_machine_tags() -> set:
    """The wheel tags the GPU machine's CPython 3.12 on x86-64 Linux takes."""
    from packaging import tags

    platforms = [f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)] + \
        ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    return set(tags.cpython_tags(GPU_PYTHON, platforms=platforms)) | \
        set(tags.compatible_tags(GPU_PYTHON, "cp312", platforms=platforms))


def wheel_requirements(path: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Requires-Dist:")]


def project_requirements() -> list[str]:
    """bioxlstm's own dependencies and its [gpu] extra, from pyproject.toml."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"].get("gpu", []))


def check_wheelhouse(folder: Path, report: dict[str, Any], installed_here: bool = False) -> bool:
    """Whether every requirement of bioxlstm[gpu], and of each carried wheel, is met on the GPU
    machine by a package already there or by a carried wheel for its Python; no torch wheel; the
    folder under WHEELHOUSE_LIMIT_MIB. installed_here: read 'already there' from this Python's
    installed distributions (on the GPU machine itself) instead of GPU_PACKAGES."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    if installed_here:
        present = {canonicalize_name(d.metadata["Name"]): d.version
                   for d in metadata.distributions() if d.metadata["Name"]}
    else:
        present = {canonicalize_name(n): GPU_VERSIONS.get(n) for n in GPU_PACKAGES}
    accepted = gpu_machine_tags()
    wheels: dict[str, tuple[Version, Path]] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.whl")):
        name, version, _, wheel_tags = parse_wheel_filename(path.name)
        if not wheel_tags & accepted:
            problems.append(f"{path.name}: not installable on CPython {GPU_PYTHON} x86-64 Linux")
        if name in wheels:
            problems.append(f"two wheels of {name}: keep one")
        if name == "torch":
            problems.append(f"{path.name}: never carry torch (the machine's CUDA build is used)")
        wheels[name] = (version, path)
    size = sum(p.stat().st_size for p in folder.glob("*")) / 2**20 if folder.exists() else 0.0
    if not wheels:
        problems.append(f"no wheels in {folder}: run benchmarks/gpu_wheels.sh")
    if size > WHEELHOUSE_LIMIT_MIB:
        problems.append(f"{folder} holds {size:.1f} MiB, over {WHEELHOUSE_LIMIT_MIB} MiB")
    machine = dict(python_version=f"{GPU_PYTHON[0]}.{GPU_PYTHON[1]}", python_full_version="3.12.3",
                   sys_platform="linux", platform_system="Linux", platform_machine="x86_64",
                   os_name="posix", implementation_name="cpython", extra="")
    import tomllib

    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    # pip's isolated build of bioxlstm sees only the carried wheels (--no-index); everything else
    # may also be met by what the machine has. Fallback wheels' own needs are checked as well.
    queue = [(r, "bioxlstm's build (isolated: wheels only)", True) for r in build]
    queue += [(r, "bioxlstm[gpu]", False) for r in project_requirements()]
    queue += [(r, f"{path.name} (if pip uses it)", False) for name, (_, path) in wheels.items()
              for r in wheel_requirements(path)]
    fallbacks = {path.name for name, (_, path) in wheels.items() if name in present}
    rows, seen, warnings = [], set(), []
    while queue:
        text, needed_by, wheels_only = queue.pop(0)
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(machine):
            continue
        name = canonicalize_name(req.name)
        if (name, str(req.specifier), wheels_only) in seen:
            continue
        seen.add((name, str(req.specifier), wheels_only))
        there = present.get(name)
        if not wheels_only and name in present and (
                there is None or req.specifier.contains(there, prereleases=True)):
            source = f"there ({there or 'version not recorded'})"
        elif name in wheels and req.specifier.contains(wheels[name][0], prereleases=True):
            source = f"carried: {wheels[name][1].name}"
        else:
            source = "MISSING"
            where = "among the carried wheels" if wheels_only else "on the GPU machine" + (
                f" ({there})" if name in present else "") + " or among the carried wheels"
            message = f"{req} (needed by {needed_by}): not {where}"
            if needed_by.split(" ")[0] in fallbacks:  # only if pip used the fallback wheel
                warnings.append(message)
            else:
                problems.append(message)
        rows.append(dict(requirement=str(req), needed_by=needed_by, met_by=source))
    print(f"wheelhouse {folder}: {len(wheels)} wheels, {size:.1f} MiB")
    for row in rows:
        print(f"  {row['requirement']:<34} {row['met_by']:<46} <- {row['needed_by']}")
    for warning in warnings:
        print(f"  warning (a fallback wheel, unused while the machine has its package): {warning}")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    report.update(wheelhouse_mib=round(size, 2), requirements=rows, problems=problems,
                  warnings=warnings)
    return not problems


def cmd_wheels(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {}
    ok = check_wheelhouse(Path(args.folder), report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# env


def cmd_env(args: argparse.Namespace) -> int:
    """Device, driver and versions; writes them as JSON."""
    from importlib import metadata

    import torch

    info: dict[str, Any] = dict(python=platform.python_version(), platform=platform.platform(),
                                torch=torch.__version__, torch_cuda=torch.version.cuda,
                                cuda_available=torch.cuda.is_available(), cpu_count=os.cpu_count())
    for package in ("triton", "mlstm_kernels", "numpy", "safetensors", "huggingface_hub",
                    "bioxlstm"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count,
                    flash_sdp=torch.backends.cuda.flash_sdp_enabled(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.max.sm,power.limit", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        info["driver"] = smi.stdout.split(",")[1].strip() if smi.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError) as err:
        info["nvidia_smi"], info["driver"] = f"unavailable ({err})", None
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                        capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = None
    for key, value in info.items():
        print(f"{key:>16}: {value}")
    Path(args.json).write_text(json.dumps(info, indent=1))
    return 0


# ---------------------------------------------------------------------------------------------
# summary


def pairs(rows: list[dict[str, Any]], key: str) -> list[tuple[dict, dict]]:
    """(xLSTM row, its transformer:<same> row) pairs among a paired benchmark's rows."""
    by_name = {row["model"]: row for row in rows}
    return [(row, by_name[f"transformer:{row['model']}"]) for row in rows
            if f"transformer:{row['model']}" in by_name and row.get(key)]


def round_ratio(first: list[float], second: list[float]) -> float | None:
    """Median over rounds of first[r] / second[r] (rounds aligned from the start)."""
    ratios = [a / b for a, b in zip(first, second) if b]
    return median(ratios) if ratios else None


def fmt(value: Any, spec: str = ",.0f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def verdict(value: float | None, target: float, at_least: bool = True) -> str:
    if value is None:
        return "not measured"
    return "met" if (value >= target if at_least else value <= target) else "MISSED"


def summary(results: dict[str, Any]) -> str:
    """The markdown tables of a results.json: environment, parts, tests, and the benchmarks with
    the issue's targets."""
    data, lines = results.get("data", {}), []
    dry = results.get("mode") == "dry-run"
    lines.append(f"# GPU check {'(DRY RUN on the CPU: tiny models, no GPU numbers)' if dry else ''}"
                 .rstrip())
    lines.append("")
    env = data.get("env", {})
    lines.append(f"Started {results.get('started')}, {results.get('elapsed_s', 0):.0f} s of a "
                 f"{results.get('budget_s', 0):.0f} s budget. Device: {env.get('gpu', 'no GPU')}"
                 f", driver {env.get('driver')}, torch {env.get('torch')} (CUDA "
                 f"{env.get('torch_cuda')}), Triton {env.get('triton')}, mlstm_kernels "
                 f"{env.get('mlstm_kernels')}, Python {env.get('python')}, commit "
                 f"{env.get('commit')}.")
    lines += ["", "| part | status | seconds | limit | note |", "|---|---|---:|---:|---|"]
    for part in results.get("parts", []):
        lines.append(f"| {part['name']} | {part['status']} | {fmt(part.get('seconds'), '.0f')} | "
                     f"{fmt(part.get('limit_s'), '.0f')} | {part.get('reason', '')} |")
    for name in ("tests", "tests-triton"):
        junit = data.get(name, {}).get("junit")
        if junit:
            lines += ["", f"{name} (pytest): {junit}"]
    lines += throughput_table(data, dry) + compile_table(data) + generation_table(data, dry) + \
        cell_table(data, dry)
    return "\n".join(lines) + "\n"


def throughput_table(data: dict[str, Any], dry: bool) -> list[str]:
    cases = [(x, t, report) for name, report in data.items() if name.startswith("throughput-")
             for x, t in pairs(report["results"], "calls_tokens_per_s")]
    order = {x["model"]: n for n, (x, _, _) in reversed(list(enumerate(cases)))}
    cases.sort(key=lambda c: (order[c[0]["model"]], c[2]["settings"]["seq_len"]))
    rows = []
    for x, t, report in cases:
        S = report["settings"]["seq_len"]
        ratio = round_ratio(x["calls_tokens_per_s"], t.get("calls_tokens_per_s", []))
        target = TRAIN_TARGETS.get(S)
        rows.append(f"| {x['model']} | {S:,} | {report['batch']} | {fmt(x.get('tokens_per_s'))} "
                    f"| {fmt(t.get('tokens_per_s'))} | {fmt(ratio, '.2f')}x | "
                    f"{fmt(x.get('peak_mib'))} | {fmt(t.get('peak_mib'))} | "
                    f"{fmt(x.get('roofline_share'), '.1%')} | "
                    + (f"≥ {target:g}x: {verdict(ratio, target)}" if target and not dry else "")
                    + " |")
    if not rows:
        return []
    return ["", "Training (forward + backward, bf16 autocast), paired rounds against the "
            "same-size Transformer (SDPA):", "",
            "| model | S | batch | xLSTM tok/s | Transformer tok/s | ratio | xLSTM peak MiB | "
            "Transformer peak MiB | xLSTM roofline | target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|", *rows]


def compile_table(data: dict[str, Any]) -> list[str]:
    report = data.get("compile")
    if not report:
        return []
    rows_by = {row["model"]: row for row in report["results"]}
    lines = ["", f"torch.compile (paired, S={report['settings']['seq_len']:,}, bf16):", "",
             "| model | tok/s | vs eager xLSTM | first calls, s |", "|---|---:|---:|---|"]
    eager = next((row for name, row in rows_by.items()
                  if not name.startswith(("compiled:", "transformer:"))), None)
    for name, row in rows_by.items():
        ratio = round_ratio(row.get("calls_tokens_per_s", []), eager["calls_tokens_per_s"]) \
            if eager and eager.get("calls_tokens_per_s") else None
        first = ", ".join(f"{s:.1f}" for s in row.get("warmup_seconds", []))
        lines.append(f"| {name} | {fmt(row.get('tokens_per_s'))} | {fmt(ratio, '.2f')}x | "
                     f"{first} |")
    return lines


def generation_table(data: dict[str, Any], dry: bool) -> list[str]:
    rows = []
    reports = [report for name, report in data.items() if name.startswith("generation-")]
    for report in sorted(reports, key=lambda r: r["settings"]["context"]):
        context = report["settings"]["context"]
        for x, t in pairs(report["results"], "rounds_ms_per_token"):
            faster = round_ratio(t["rounds_ms_per_token"], x["rounds_ms_per_token"])
            target = GENERATION_TARGET[1] if context == GENERATION_TARGET[0] and not dry else None
            rows.append(f"| {x['model']} | {context:,} | {x['ms_per_token']:.3f} | "
                        f"{t['ms_per_token']:.3f} | {fmt(faster, '.2f')}x | "
                        f"{fmt(x.get('prefill_s'), '.2f')} | {fmt(t.get('prefill_s'), '.2f')} | "
                        + (f"≥ {target:g}x: {verdict(faster, target)}" if target else "") + " |")
    if not rows:
        return []
    return ["", "Generation (batch 1, float32), ms per token from the state against the KV-cache "
            "Transformer, paired rounds:", "",
            "| model | context | xLSTM ms/token | Transformer ms/token | xLSTM faster | "
            "xLSTM prefill s | Transformer prefill s | target |",
            "|---|---:|---:|---:|---:|---:|---:|---|", *rows]


def cell_table(data: dict[str, Any], dry: bool) -> list[str]:
    lines: list[str] = []
    for name, report in sorted(data.items(), key=lambda kv: kv[0]):
        if not name.startswith("cell-"):
            continue
        s = report["settings"]
        total = {row["form"]: row["forward_ms"] + row["backward_ms"] for row in report["results"]}
        ours = next((v for form, v in total.items() if not form.startswith("mlstm_kernels:")), None)
        theirs = {form: v for form, v in total.items() if form.startswith("mlstm_kernels:")}
        best = min(theirs, key=theirs.get) if theirs else None
        ratio = ours / theirs[best] if ours is not None and best else None
        lines += ["", f"mLSTM cell alone ({name}: B={s['batch']} NH={s['heads']} S={s['seq_len']:,} "
                  f"DH={s['head_dim']} {s['dtype']}{' autocast' if s.get('autocast') else ''}); "
                  f"bioxlstm / fastest mlstm_kernels kernel ({best}): {fmt(ratio, '.2f')}x"
                  + ("" if dry else f", target ≤ {CELL_TARGET}x: "
                     f"{verdict(ratio, CELL_TARGET, at_least=False)}"), "",
                  "| form | forward ms | backward ms | total ms | rel. diff h, dq (to first) |",
                  "|---|---:|---:|---:|---|"]
        diffs = report.get("relative_difference_to_first", {})
        for row in report["results"]:
            d = diffs.get(row["form"], {})
            lines.append(f"| {row['form']} | {row['forward_ms']:.3f} | {row['backward_ms']:.3f} | "
                         f"{total[row['form']]:.3f} | "
                         + (f"{d['h']:.1e}, {d['dq']:.1e}" if d else "") + " |")
        for form, reason in report.get("failed", {}).items():
            lines.append(f"| {form} | {reason} | | | |")
    return lines


def junit_summary(path: Path) -> str:
    """'N passed, N failed, ...' and the failing tests, from a junit XML file ('' if none)."""
    if not path.exists():
        return ""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        return f"unreadable junit file ({err})"
    counts = dict(passed=0, failed=0, errors=0, skipped=0)
    failing = []
    for case in root.iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in
                        ("failure", "error", "skipped")), "passed")
        key = dict(failure="failed", error="errors").get(outcome, outcome)
        counts[key] += 1
        if outcome in ("failure", "error"):
            message = next(child for child in case if child.tag == outcome).get("message", "")
            failing.append(f"{case.get('name')}: {message.splitlines()[0][:160] if message else ''}")
    text = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    return text + "".join(f"\n  - {line}" for line in failing)


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the parts, their limits and commands, as `run` would go through them."""
    work, out = BENCH / "results" / "gpu_check_work", Path(os.environ.get("OUT", "$OUT"))
    for part in parts(args.dry_run, work, out):
        env = " ".join(f"{k}={v}" for k, v in part.env.items())
        print(f"{part.name:<17} {part.cap_s:>4.0f} s  {env + ' ' if env else ''}"
              f"{' '.join(part.command)}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    print(summary(json.loads(Path(args.results).read_text())))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the check (what gpu_check.sh calls)")
    run.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes, no GPU")
    run.add_argument("--budget", type=float, help="seconds for all parts (default "
                     f"{DEFAULT_BUDGET_S['gpu']:.0f}; --dry-run {DEFAULT_BUDGET_S['dry']:.0f})")
    run.add_argument("--parts", default="", help="only these parts, comma-separated")
    run.add_argument("--skip", default="", help="leave these parts out, comma-separated")
    run.add_argument("--out", default=os.environ.get("OUT") or str(BENCH / "results" / "gpu_check"),
                     help="results.json, summary.md and junit files (default $OUT, else "
                     "benchmarks/results/gpu_check)")
    run.add_argument("--work", help="the parts' own JSON files (default "
                     "benchmarks/results/gpu_check_work)")
    install = sub.add_parser("install", help="pip install -e .[gpu] offline from benchmarks/wheels")
    install.add_argument("--dry-run", action="store_true", help="resolve only (pip --dry-run), "
                         "checking the wheels against the GPU machine's package list")
    install.add_argument("--json", required=True)
    wheels = sub.add_parser("wheels", help="check benchmarks/wheels against the GPU machine")
    wheels.add_argument("--folder", default=str(WHEELS))
    wheels.add_argument("--json")
    env = sub.add_parser("env", help="device, driver and versions")
    env.add_argument("--json", required=True)
    plan = sub.add_parser("plan", help="list the parts with their time limits and commands")
    plan.add_argument("--dry-run", action="store_true")
    again = sub.add_parser("summary", help="print the tables of a results.json")
    again.add_argument("results")
    args = parser.parse_args(argv)
    if args.command == "run":
        return cmd_run(args, run)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = dict(
        install=cmd_install, wheels=cmd_wheels, env=cmd_env, summary=cmd_summary, plan=cmd_plan)
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
