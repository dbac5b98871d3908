"""Download, for the GPU machine, the wheels of the project's dependencies it lacks.

    python benchmarks/gpu_wheels.py                 # -> .whl/ (git-ignored), prints the sizes

The lent GPU machine (DEVELOPERS.md, /work/.library/device) runs Python 3.12 with torch,
transformers, peft, accelerate, pandas, scipy and more, and reaches no package index. This walks
the project's dependencies (pyproject's `dependencies`) through the installed distributions'
own requirements, drops every package that machine already has (its image's list below, read on
2026-11-17: its torch build must stay, so torch/transformers/peft are never carried), and
downloads the rest with `pip download --no-deps` at the versions installed here (the ones the
test suite ran with), as cp312 manylinux wheels. On the machine:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD

`pip download --no-deps` is used, not a resolver run, because resolving trl or bitsandbytes for
another platform pulls torch and its CUDA libraries (gigabytes) that the machine already has.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# The GPU image's packages (KINDS.md, "Python packages already there", 2026-11-17).
ON_MACHINE = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
# Not needed for a GPU sweep: the judge server's web stack and FastChat's UI extras are big
# and the acceptance run serves its judge with them only if present (see README).
SKIP = {"fschat", "gradio", "gradio-client", "nvidia-nccl-cu12", "triton"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64",
             "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_35_x86_64"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str]) -> dict[str, str]:
    """Installed distributions reachable from `roots` (with extras) -> installed version."""
    seen: dict[str, str] = {}
    stack = [Requirement(r) for r in roots]
    while stack:
        req = stack.pop()
        name = canonical(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        if name in seen and not req.extras:
            continue
        seen[name] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            env = {"extra": next(iter(req.extras), ""), "python_version": "3.12",
                   "sys_platform": "linux", "platform_machine": "x86_64"}
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e})
                                         for e in (req.extras or {""})):
                stack.append(sub)
    return seen


# bitsandbytes ships one library per CUDA/ROCm version (43 MB, most of the 64 MiB a device call
# may carry); the GPU machine's torch is a CUDA 13 build, so only these are kept.
BNB_KEEP = re.compile(r"libbitsandbytes_(cpu|cuda13\d)\.so$")


def trim_bitsandbytes(wheel: Path) -> None:
    """Rewrite the bitsandbytes wheel without the libraries of other CUDA/ROCm/XPU versions
    (their lines dropped from RECORD too, so pip installs it as usual)."""
    def dropped(name: str) -> bool:
        return "libbitsandbytes_" in name and not BNB_KEEP.search(name)

    trimmed = wheel.with_suffix(".trim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(trimmed, "w",
                                                         zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if dropped(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line + b"\n" for line in data.splitlines()
                                if line and not dropped(line.split(b",")[0].decode()))
            dst.writestr(item, data)
    trimmed.replace(wheel)


def build_wheel(spec: str, dest: Path) -> bool:
    """A pure-Python package published only as a source archive: build its wheel here."""
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), spec]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".whl")
    args = parser.parse_args()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {n: v for n, v in closure(deps).items() if n not in ON_MACHINE | SKIP}
    args.dest.mkdir(exist_ok=True)
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    failed = []
    for name, version in sorted(wanted.items()):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", *platform_args,
               "-d", str(args.dest), f"{name}=={version}"]
        if subprocess.run(cmd, capture_output=True).returncode != 0 and not build_wheel(
                f"{name}=={version}", args.dest):
            failed.append(f"{name}=={version}")
    for wheel in args.dest.glob("bitsandbytes-*.whl"):
        trim_bitsandbytes(wheel)
    total = sum(f.stat().st_size for f in args.dest.glob("*.whl"))
    for wheel in sorted(args.dest.glob("*.whl"), key=lambda f: -f.stat().st_size):
        print(f"{wheel.stat().st_size / 2**20:8.1f} MB  {wheel.name}")
    print(f"{len(wanted)} packages, {total / 2**20:.1f} MB in {args.dest}")
    if failed:
        print("no wheel (downloaded or built) for: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
