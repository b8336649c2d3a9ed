"""Ahead-of-time compilation of every launchable Triton kernel configuration for sm_80 and sm_90,
in each specialization (arguments divisible by 16) the wrappers can launch.

A kernel that would not compile on an A100 / H100, that spills registers or that needs more shared
memory than the device has fails here, without a GPU. ``tools/kernel_report.py`` compiles in one
subprocess (without ``TRITON_INTERPRET``, which would turn the kernels into interpreter objects);
its result is shared by the tests of this module. A further test checks that the wrappers launch
only configurations in that list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from minser.kernels import attention_pool_triton, attention_triton, configs  # noqa: E402

REPORT = Path(__file__).resolve().parents[1] / "tools" / "kernel_report.py"
ARCHS = (80, 90)


def _specs() -> list[configs.CompileSpec]:
    return [*attention_triton.compile_specs(), *attention_pool_triton.compile_specs()]


def _compile_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("kernel_report") / "report.json"
    run = subprocess.run([sys.executable, str(REPORT), "--json", str(out)], env=_compile_env(),
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())


def test_every_launchable_configuration_compiles_for_sm80_and_sm90(report):
    compiled = [(row["kernel"], row["arch"], row["hints"]) for row in report]
    expected = {(spec.label, arch, hint) for spec in _specs() for arch in ARCHS for hint in spec.hints}
    assert sorted(compiled) == sorted(expected)
    # (4 head sizes x 3 dtypes x 4 attention kernels) x 2 specializations
    # + (7 feature tiles x 3 dtypes x 2 pooling kernels) x 3 specializations
    assert len(expected) == 2 * (4 * 3 * 4 * 2 + 7 * 3 * 2 * 3)


def test_no_register_spills_and_shared_memory_within_the_device_limit(report):
    assert not {f"{row['kernel']} sm_{row['arch']} {row['hints']}": row["problems"] for row in report if row["problems"]}
    assert all(0 < row["registers"] <= 255 for row in report)
    assert all(row["spill_stores"] == row["spill_loads"] == 0 for row in report)
    limits = {80: 163 * 1024, 90: 227 * 1024}
    assert all(0 <= row["shared_bytes"] <= limits[row["arch"]] == row["shared_limit"] for row in report)


def test_report_help():
    run = subprocess.run([sys.executable, str(REPORT), "--help"], env=_compile_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "--check" in run.stdout and "sm_80" in run.stdout


@pytest.mark.parametrize("args, status, shown", [(["--help"], 0, "sm_80"), ([], 2, "pip install 'minser[gpu]'")])
def test_report_without_triton_shows_its_help_and_says_what_to_install(args, status, shown):
    """Without the gpu extra (triton blocked here) --help was a ModuleNotFoundError traceback."""
    script = (f"import runpy, sys; sys.modules['triton'] = None; sys.argv = [{str(REPORT)!r}, *{args!r}]; "
              f"runpy.run_path({str(REPORT)!r}, run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", script], env=_compile_env(), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == status and shown in run.stdout + run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr


class _Recorder:
    """Stands in for a Triton kernel: records how the wrapper launches it (types and constexprs)."""

    def __init__(self, name: str, fn, launches: list) -> None:
        self.name, self.arg_names, self.launches = name, fn.arg_names, launches

    def __getitem__(self, grid):
        def launch(*args, num_warps, num_stages, **constexprs):
            self.launches.append((self.name, args, constexprs, num_warps, num_stages))

        return launch


def _argument_type(value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + {torch.int32: "i32", **configs.TYPE_NAMES}[value.dtype]
    return "fp32" if isinstance(value, float) else "i32"


def _launched_signatures(monkeypatch, launches: list) -> None:
    for module in (attention_triton, attention_pool_triton):
        for name, fn in module.KERNELS.items():
            monkeypatch.setattr(module, fn.__name__, _Recorder(name, fn, launches))
    # What a CUDA launch passes (the interpreter widens bfloat16 dot operands).
    monkeypatch.setattr(attention_triton, "_interpreting", lambda: False)


KERNELS = {**attention_triton.KERNELS, **attention_pool_triton.KERNELS}


def _matching_spec(specs, name, args, constexprs, num_warps, num_stages) -> str | None:
    for spec in specs:
        if spec.fn is not KERNELS[name]:
            continue
        runtime = [a for a in spec.fn.arg_names if spec.signature[a] != "constexpr"]
        if (spec.constexprs == constexprs
                and [spec.signature[a] for a in runtime] == [_argument_type(v) for v in args]
                and (spec.launch.num_warps, spec.launch.num_stages) == (num_warps, num_stages)):
            return spec.label
    return None


def _divisible(value) -> bool:
    """Whether Triton's launcher specializes an argument as divisible by 16 (pointers: by address)."""
    return (value.data_ptr() if isinstance(value, torch.Tensor) else value) % 16 == 0


def _misaligned(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A view of ``shape`` one element past a fresh tensor's start, with a row stride of last + 1."""
    *rest, last = shape
    return torch.zeros(*rest, last + 1, dtype=dtype)[..., 1:].requires_grad_()


def test_wrappers_launch_only_compiled_specializations(monkeypatch):
    """Every pointer a wrapper passes is 16-byte aligned and every attention stride divisible by 16
    (misaligned inputs are copied), so each launch is one of the compiled specializations, up to
    which sizes happen to be multiples of 16 (configs.HINTS)."""
    launches: list = []
    _launched_signatures(monkeypatch, launches)
    for dtype in configs.DTYPES:
        q, k, v = (_misaligned((2, 2, n, 32), dtype) for n in (5, 7, 7))
        h = _misaligned((2, 9, 40), dtype)
        assert not any(_divisible(t) for t in (q, k, v, h))
        attention_triton.triton_attention(q, k, v, torch.tensor([7, 3])).sum().backward()
        pooled, weights = attention_pool_triton.triton_attention_pool(h, torch.zeros(40), None)
        (pooled.sum() + weights.sum()).backward()
    specs = {spec.label: spec for spec in _specs()}
    assert len(launches) == 3 * (4 + 2)
    for name, args, constexprs, num_warps, num_stages in launches:
        spec = specs[_matching_spec(specs.values(), name, args, constexprs, num_warps, num_stages)]
        value = dict(zip([a for a in spec.fn.arg_names if spec.signature[a] != "constexpr"], args))
        required = spec.pointers if "pointers" in spec.hints else spec.pointers + spec.strides
        assert [a for a in required if not _divisible(value[a])] == [], (name, spec.hints)


def _launch_specialization(spec: configs.CompileSpec, args: tuple) -> tuple[set, list]:
    """What Triton's launcher makes of ``args`` (its own function): the arguments it specializes as
    divisible by 16, and those it compiles as constants (integers equal to 1), given ``do_not_specialize``."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    names = [a for a in spec.fn.arg_names if spec.signature[a] != "constexpr"]
    unspecialized = set(attention_triton.UNSPECIALIZED) if spec.fn in attention_triton.KERNELS.values() else set()
    kinds = {name: native_specialize_impl(BaseBackend, value, False, name not in unspecialized, True)
             for name, value in zip(names, args)}
    return {n for n, k in kinds.items() if k[1] == "D"}, [n for n, k in kinds.items() if k[0] == "constexpr"]


@pytest.mark.parametrize("heads", [1, 4, 16])
@pytest.mark.parametrize("steps", [(64, 64), (46, 187)])
def test_attention_launches_are_compiled_specializations_for_any_head_count(monkeypatch, heads, steps):
    """Triton compiles an integer argument equal to 1 as a constant and specializes on which are
    divisible by 16; the head count is neither (UNSPECIALIZED), so one head, four or sixteen launch
    exactly a specialization compiled ahead of time: all arguments at 64 steps, pointers and strides at
    46 queries over 187 keys."""
    launches: list = []
    _launched_signatures(monkeypatch, launches)
    lq, lk = steps
    q, k, v = (torch.zeros(2, heads, n, 32, requires_grad=True) for n in (lq, lk, lk))
    attention_triton.triton_attention(q, k, v, torch.tensor([lk, 3])).sum().backward()
    specs = _specs()
    assert len(launches) == 4
    for name, args, *config in launches:
        spec = next(s for s in specs if s.label == _matching_spec(specs, name, args, *config))
        divisible, constants = _launch_specialization(spec, args)
        assert constants == [], name
        assert any(divisible == set(spec.divisible(hint)) for hint in spec.hints), (name, sorted(divisible))


def test_wrappers_launch_only_compiled_configurations(monkeypatch):
    launches: list = []
    _launched_signatures(monkeypatch, launches)
    for dtype in configs.DTYPES:
        for d in configs.ATTENTION_HEAD_DIMS:
            q, k, v = (torch.zeros(2, 2, n, d, dtype=dtype, requires_grad=True) for n in (5, 7, 7))
            attention_triton.triton_attention(q, k, v, torch.tensor([7, 3])).sum().backward()
        for dim in (1, 17, 40, 100, 200, 300, 1024):  # every feature tile
            h, w = torch.zeros(2, 9, dim, dtype=dtype, requires_grad=True), torch.zeros(dim, requires_grad=True)
            pooled, weights = attention_pool_triton.triton_attention_pool(h, w, None)
            (pooled.sum() + weights.sum()).backward()
    specs = _specs()
    matched = [_matching_spec(specs, *launch) for launch in launches]
    assert not [(launch[0], launch[2]) for launch, label in zip(launches, matched) if label is None]
    assert set(matched) == {spec.label for spec in specs}  # and the list holds nothing unlaunchable
