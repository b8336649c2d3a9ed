"""Compile every launchable minser Triton kernel configuration ahead of time and report its resources.

For each kernel configuration listed by ``minser.kernels.configs`` (through the ``compile_specs()``
of the two Triton modules) and each target (sm_80, sm_90), this compiles the kernel with
``triton.compile`` (no GPU needed), once per specialization the wrappers can launch (which
arguments are divisible by 16: all, pointers and strides, or only pointers; see
``minser.kernels.configs.HINTS``), runs ``ptxas-blackwell -v`` from Triton's NVIDIA backend (Triton
3.6 or later) on the PTX, and prints registers, spill stores/loads and shared memory (Triton's
dynamic allocation).

Usage::

    python tools/kernel_report.py                 # table for sm_80 and sm_90
    python tools/kernel_report.py --arch 90 --json report.json --check

``--check`` exits with status 1 when a configuration spills registers or needs more shared memory
than the device allows per block (sm_80: 163 KiB opt-in, sm_90: 227 KiB). The CPU interpreter
(``TRITON_INTERPRET``) is switched off for this process: it must compile, not interpret.
"""

from __future__ import annotations

import os

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: compile, do not interpret
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # bench/_common: option_errors, check_json
import _common as common  # noqa: E402

from minser.errors import MinserError  # noqa: E402
from minser.files import atomic_write  # noqa: E402
from minser.kernels.configs import CompileSpec  # noqa: E402

try:  # the gpu (or dev) extra; without it --help still works and main() says what to install
    import triton
    from triton.backends.compiler import GPUTarget

    from minser.kernels import attention_pool_triton, attention_triton
except ImportError:
    triton = None

SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
"""Largest shared memory per block (opt-in) in bytes, per compute capability."""

PTXAS = None if triton is None else Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas-blackwell"
PTXAS_SINCE = "3.6"
"""The first Triton release whose wheel ships ``ptxas-blackwell`` (3.0 to 3.5 ship only ``ptxas``)."""


def specs() -> list[CompileSpec]:
    """Every kernel configuration the library can launch."""
    return [*attention_triton.compile_specs(), *attention_pool_triton.compile_specs()]


def ptxas_usage(ptx: str, arch: int) -> dict[str, int]:
    """Registers, spill bytes and static shared memory that ``ptxas -v`` reports for ``ptx``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        run = subprocess.run(
            [str(PTXAS), "-v", f"--gpu-name=sm_{arch}a" if arch == 90 else f"--gpu-name=sm_{arch}",
             str(src), "-o", str(Path(tmp) / "kernel.cubin")],
            capture_output=True, text=True, check=True,
        )
    log = run.stderr + run.stdout

    def number(pattern: str) -> int:
        found = re.search(pattern, log)
        return int(found.group(1)) if found else 0

    return {
        "registers": number(r"Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
        "static_smem": number(r"(\d+) bytes smem"),
    }


def compile_one(spec: CompileSpec, arch: int, hint: str) -> dict[str, object]:
    """Compiles one configuration for ``sm_<arch>`` with the arguments ``spec.divisible(hint)``
    specialized as divisible by 16 (``minser.kernels.configs.HINTS``); returns its report row
    (``problems`` lists what the device would reject or run slowly: register spills, shared memory
    over the limit)."""
    hints = {(spec.fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in spec.divisible(hint)}
    source = triton.compiler.ASTSource(fn=spec.fn, signature=spec.signature, constexprs=spec.constexprs,
                                       attrs=hints)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": spec.launch.num_warps, "num_stages": spec.launch.num_stages})
    usage = ptxas_usage(kernel.asm["ptx"], arch)
    shared = int(kernel.metadata.shared) + usage["static_smem"]
    row = {
        "kernel": spec.label,
        "arch": arch,
        "hints": hint,
        "num_warps": spec.launch.num_warps,
        "num_stages": spec.launch.num_stages,
        "registers": usage["registers"],
        "spill_stores": usage["spill_stores"],
        "spill_loads": usage["spill_loads"],
        "shared_bytes": shared,
        "shared_limit": SMEM_LIMIT[arch],
    }
    row["problems"] = problems(row)
    return row


def _compile_indexed(job: tuple[int, int, str]) -> dict[str, object]:
    index, arch, hint = job
    return compile_one(specs()[index], arch, hint)


def compile_all(archs: list[int], only: str = "", jobs: int = 1) -> list[dict[str, object]]:
    """Report rows of every configuration whose label contains ``only``, for each arch and each of
    its launchable specializations, in order."""
    todo = [(i, arch, hint) for arch in archs for i, spec in enumerate(specs()) if only in spec.label
            for hint in spec.hints]
    if jobs <= 1:
        return [_compile_indexed(job) for job in todo]
    # spawn: fresh workers that import triton themselves (no forked compiler or torch state).
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return pool.map(_compile_indexed, todo, chunksize=1)


def problems(row: dict[str, object]) -> list[str]:
    """What is wrong with a report row (register spills, shared memory over the limit)."""
    found = []
    if row["spill_stores"] or row["spill_loads"]:
        found.append(f"spills {row['spill_stores']} B stored / {row['spill_loads']} B loaded")
    if row["shared_bytes"] > row["shared_limit"]:
        found.append(f"shared memory {row['shared_bytes']} B > {row['shared_limit']} B")
    return found


def table(rows: list[dict[str, object]]) -> str:
    """Markdown table of the report rows."""
    lines = ["| kernel | sm | divisible by 16 | warps | stages | registers | spills (B st/ld) | shared (KiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['arch']} | {r['hints']} | {r['num_warps']} | "
                     f"{r['num_stages']} | {r['registers']} | "
                     f"{r['spill_stores']}/{r['spill_loads']} | {r['shared_bytes'] / 1024:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], choices=sorted(SMEM_LIMIT),
                        help="compute capabilities to compile for (default: 80 90)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--only", default="", help="compile only kernels whose label contains this text")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="compile in this many processes (default: one per CPU)")
    parser.add_argument("--check", action="store_true", help="exit 1 on register spills or shared memory over the limit")
    args = parser.parse_args(argv)
    if triton is None:
        parser.exit(2, f"{parser.prog}: error: it compiles with triton, which is not installed: "
                       "pip install 'minser[gpu]' (Linux x86_64), or the dev extra\n")
    if not PTXAS.is_file():  # else a FileNotFoundError traceback once the first kernel had compiled
        parser.exit(2, f"{parser.prog}: error: {PTXAS} is missing: triton {triton.__version__} ships no "
                       f"ptxas-blackwell, which this report assembles with; pip install 'triton>={PTXAS_SINCE}'\n")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give a positive number of processes")
    if not any(args.only in spec.label for spec in specs()):
        parser.error(f"--only {args.only!r}: no kernel label contains it; labels are e.g. {specs()[0].label!r}")
    with common.option_errors(parser):
        common.check_json(args.json)

    rows = compile_all(args.arch, args.only, args.jobs)
    print(table(rows))
    if args.json:
        text = json.dumps(rows, indent=1)
        try:
            atomic_write(args.json, lambda file: file.write(text), mode="w")
        except MinserError as exc:  # what changed while it compiled: a folder made where --json points, a full disk
            print(f"error: {exc}", file=sys.stderr)
            return 2
    bad = [f"{r['kernel']} sm_{r['arch']} ({r['hints']} divisible by 16): {'; '.join(r['problems'])}"
           for r in rows if r["problems"]]
    for line in bad:
        print("PROBLEM", line, file=sys.stderr)
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
