"""Tests of the benchmark scripts in bench/: smoke runs with --quick, FLOP formulas, shapes, options, JSON."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minser import models
from minser.errors import ConfigError, MinserError
from minser.kernels import reference
from minser.train import given_settings

BENCH = Path(__file__).resolve().parents[1] / "bench"
OWN_SCRIPTS = ("attention.py", "models.py")
# Every script with a --quick mode (bench/inference.py has its own smoke test).
SCRIPTS = (*OWN_SCRIPTS, "frontend.py", "train.py")


def _load(name: str):
    """Import ``bench/<name>.py`` as a module (the scripts put bench/ on sys.path for ``_common``)."""
    module_name = f"bench_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


attention = _load("attention")
bench_models = _load("models")
common = _load("_common")


# --------------------------------------------------------------------------------------------
# Smoke: every script runs with --quick and writes valid JSON


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory, emodb_root) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    runs = {}
    out = tmp_path_factory.mktemp("bench")
    for script in SCRIPTS:
        path = out / f"{script}.json"
        # One thread: on a busy 2-core machine a second OpenMP thread makes small ops many times
        # slower. --threads is ours; other scripts (frontend.py) promise only --quick and --json.
        threads = ["--threads", "1"] if script in (*OWN_SCRIPTS, "train.py") else []
        proc = subprocess.run(
            [sys.executable, str(BENCH / script), "--quick", "--json", str(path), *threads],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "MINSER_DATA": str(emodb_root.parent)},
        )
        runs[script] = (proc, path)
    return runs


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run_writes_json(quick_runs, script):
    proc, path = quick_runs[script]
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(path.read_text())
    assert isinstance(payload, dict) and payload
    assert not list(path.parent.glob(f".{path.name}.*")), "a temporary file was left behind"


@pytest.mark.parametrize("module", [attention, bench_models])
def test_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--quick" in out and "--json" in out and "--threads" in out


def test_attention_quick_results(quick_runs):
    proc, path = quick_runs["attention.py"]
    payload = json.loads(path.read_text())
    env = payload["environment"]
    assert env["torch"] == torch.__version__ and env["cpu_count"] == os.cpu_count()
    rows = payload["results"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["backend"] for r in ok} >= {"reference", "sdpa-math"}
    assert {r["op"] for r in ok} == {"attention", "pool"}
    assert {r["masked"] for r in ok} == {True, False}
    for row in ok:
        assert row["max_abs_err"] < 1e-4, row  # every backend computes the same attention
        assert row["median_ms"] > 0 and row["timing"]["n"] >= 1
        assert math.isclose(row["tflops"], row["flops"] / (row["median_ms"] * 1e-3) / 1e12)
    for row in (r for r in ok if r["op"] == "attention"):
        shape = attention.AttentionShape("", row["B"], row["H"], row["Lq"], row["Lk"], row["D"])
        assert row["valid_keys"] <= shape.valid_keys
        factor = 1 if row["pass"] == "fwd" else 3.5
        assert row["flops"] == 4 * row["H"] * row["Lq"] * row["D"] * row["valid_keys"] * factor
    if not torch.cuda.is_available():
        assert "triton" not in {r["backend"] for r in rows}
        assert "needs a CUDA GPU" in proc.stdout and all(d == "fp32" for d in {r["dtype"] for r in rows})


def test_models_quick_results(quick_runs):
    _, path = quick_runs["models.py"]
    payload = json.loads(path.read_text())
    rows = {r["model"]: r for r in payload["results"] if r["device"] == "cpu"}
    assert set(rows) == {"cnn", "cat"}
    for name, row in rows.items():
        assert row["params"] == sum(p.numel() for p in models.build(name, 4).parameters())
        assert math.isclose(row["b1_rtf"], row["b1_ms"] / 7500)
        assert row["train_full_utt_s"] > 0 and row["train_batch_utt_s"] > 0
        assert row["train_batch"]["padded_frames_mean"] <= 750
    assert rows["cnn"]["b4_vs_cnn"] == 1.0


# --------------------------------------------------------------------------------------------
# FLOP and byte formulas


def _counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_attention_flops_match_torch_flop_counter():
    b, h, lq, lk, d = 2, 3, 5, 7, 4
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for n in (lq, lk, lk))
    shape = attention.AttentionShape("", b, h, lq, lk, d)
    forward = _counted_flops(lambda: reference.attention(q, k, v))
    assert attention.attention_flops(shape, "fwd") == forward == 4 * b * h * lq * lk * d
    # The reference's backward is 4 matmuls (2x forward); the convention adds FlashAttention's
    # recomputation of Q K^T (0.5x forward) on top.
    both = _counted_flops(lambda: reference.attention(q, k, v).sum().backward())
    assert attention.attention_flops(shape, "fwd+bwd") == both + forward // 2


def test_attention_flops_exclude_masked_keys():
    full = attention.AttentionShape("", 2, 3, 5, 7, 4)
    masked = attention.AttentionShape("", 2, 3, 5, 7, 4, key_lengths=(7, 3))
    assert attention.attention_flops(masked, "fwd") == attention.attention_flops(full, "fwd") * 10 // 14
    assert attention.attention_flops(masked, "fwd+bwd") == 3.5 * 4 * 3 * 5 * 4 * 10


def test_pool_flops_and_bytes():
    h, w, p = torch.randn(3, 6, 8), torch.randn(8, 1), torch.rand(3, 6)
    shape = attention.PoolShape("", 3, 6, 8)
    # the counter skips matrix-vector products, so count the scores as a (D, 1) matmul
    counted = _counted_flops(lambda: (h @ w, torch.einsum("bt,btd->bd", p, h)))
    assert attention.pool_flops(shape, "fwd") == counted == 4 * 3 * 6 * 8
    masked = attention.PoolShape("", 3, 6, 8, lengths=(6, 1, 2))
    assert attention.pool_flops(masked, "fwd") == 4 * 8 * 9 and attention.pool_flops(masked, "fwd+bwd") == 3 * 4 * 8 * 9
    # fp16: h read once, then pooled (B, D), weights (B, T) and w (D,)
    assert attention.pool_bytes(shape, "fwd", 2) == 2 * (3 * 6 * 8 + 3 * 8 + 3 * 6 + 8)
    assert attention.pool_bytes(shape, "fwd+bwd", 4) > 2 * attention.pool_bytes(shape, "fwd", 4) - 4 * 3 * 6


# --------------------------------------------------------------------------------------------
# Shapes


def test_sweep_lengths_and_shapes():
    assert attention.sweep_lengths(8192) == [128, 256, 512, 1024, 2048, 4096, 8192]
    assert attention.sweep_lengths(1000) == [128, 256, 512]
    with pytest.raises(ValueError):
        attention.sweep_lengths(64)
    shapes = attention.sweep_shapes([128, 8192], (32, 64, 128), tokens=16384, hidden=2048)
    assert len(shapes) == 6
    for s in shapes:
        assert s.q_len == s.k_len and s.key_lengths is None
        assert s.batch * s.q_len == 16384 and s.heads * s.head_dim == 2048
    assert attention.sweep_shapes([4096], (64,), tokens=1024, hidden=32)[0].batch == 1  # never below one


@pytest.mark.parametrize("bad", [(0, 3), (3,), (8, 3)])
def test_attention_shape_rejects_bad_key_lengths(bad):
    # a zero-length row would make SDPA return NaN; lengths must match the batch and fit Lk
    with pytest.raises(ValueError):
        attention.AttentionShape("x", 2, 1, 4, 7, 8, key_lengths=bad)


def test_model_shapes_are_the_networks():
    shapes, pools, note = attention.model_shapes(["cat", "ilt"], batch=3)
    options = models.MODELS["cat"].Options()
    heads, head_dim = options.heads, options.d_model // options.heads
    assert "batch 3" in note and shapes and pools
    assert {(s.batch, s.heads, s.head_dim) for s in shapes} == {(3, heads, head_dim)}
    cross = {(s.q_len, s.k_len) for s in shapes if "cross" in s.label}
    assert len(cross) == 2 and cross == {(k, q) for q, k in cross}  # both directions of CAT
    assert {s.key_lengths is None for s in shapes} == {True, False}
    masked = [s for s in shapes if s.key_lengths is not None]
    assert all(max(s.key_lengths) <= s.k_len for s in masked)
    assert all(p.dim == options.d_model and p.label.startswith("ilt") for p in pools)
    assert reference.attention.__name__ == "attention"  # the recording hook was removed


def test_network_names_refuse_empty_and_unknown_names():
    assert common.network_names("cat, ilt") == ("cat", "ilt")
    for text in ("", "cat,", ",cat", "cat,,ilt"):  # '' used to mean all networks in bench/attention.py
        with pytest.raises(ConfigError, match=rf"^--models {re.escape(repr(text))}: an empty network name; give "
                                              "comma-separated names from cnn, "):
            common.network_names(text)
    with pytest.raises(ConfigError, match=r"^--models: unknown network\(s\) \['nope'\]; valid: cnn, "):
        common.network_names("cat,nope")


# --------------------------------------------------------------------------------------------
# Options


def _settings(argv):
    args = attention.build_parser().parse_args(argv)
    return attention.resolve_settings(args)


def test_attention_cpu_defaults_and_fp32_only(capsys):
    s = _settings(["--dtype", "fp16", "--dtype", "bf16", "--device", "cpu"])
    assert s.dtypes == ("fp32",) and "only fp32" in capsys.readouterr().out
    assert s.lengths == (128, 256, 512, 1024) and s.passes == ("fwd", "fwd+bwd")
    assert s.ops == ("attention", "pool") and s.use_models and s.models is None


def test_attention_gpu_defaults(monkeypatch):
    monkeypatch.setattr(attention.common, "resolve_device", lambda name: torch.device("cuda"))
    s = _settings([])
    assert s.dtypes == ("fp16", "bf16", "fp32") and s.lengths[-1] == 8192 and s.head_dims == (32, 64, 128)
    assert (s.tokens, s.hidden) == (16384, 2048)
    backends = attention.attention_backends(torch.device("cuda"))
    assert backends[0] == "triton" and backends[-1] == "reference"
    assert {"sdpa-flash", "sdpa-efficient", "sdpa-math"} <= set(backends)
    assert "triton" not in attention.attention_backends(torch.device("cpu"))


def test_attention_options():
    s = _settings(["--device", "cpu", "--op", "pool", "--pass", "fwd", "--no-sweep", "--no-models",
                   "--shape", "2,4,46,187,16", "--models", "cat,ilt", "--max-len", "4096"])
    assert s.ops == ("pool",) and s.passes == ("fwd",) and s.lengths == () and not s.use_models
    assert s.shapes == (attention.AttentionShape("shape 2,4,46,187,16", 2, 4, 46, 187, 16),)
    quick = _settings(["--quick", "--device", "cpu"])
    assert quick.models == ("cat",) and quick.repeat <= 3 and quick.lengths == (128,)
    with pytest.raises(SystemExit):
        attention.build_parser().parse_args(["--shape", "2,4,46"])
    with pytest.raises(ConfigError, match="--head-dims '64,x': give comma-separated positive integers"):
        _settings(["--head-dims", "64,x"])


def test_attention_quick_changes_only_the_defaults():
    quick = _settings(["--quick", "--device", "cpu"])
    assert (quick.warmup, quick.repeat, quick.model_batch, quick.tokens, quick.hidden) == (1, 3, 8, 512, 128)
    assert (quick.lengths, quick.head_dims, quick.pool_dims, quick.models) == ((128,), (64,), (64,), ("cat",))
    given = ["--repeat", "50", "--warmup", "4", "--batch", "16", "--tokens", "1024", "--hidden", "256",
             "--max-len", "256", "--head-dims", "32,128", "--pool-dims", "128", "--models", "ilt"]
    s = _settings(["--quick", "--device", "cpu", *given])
    assert (s.warmup, s.repeat, s.model_batch, s.tokens, s.hidden) == (4, 50, 16, 1024, 256)
    assert (s.lengths, s.head_dims, s.pool_dims, s.models) == ((128, 256), (32, 128), (128,), ("ilt",))
    assert s == _settings(["--device", "cpu", *given])  # --quick changes nothing that was given
    with pytest.raises(ConfigError, match="--repeat 0: give a positive number"):
        _settings(["--quick", "--device", "cpu", "--repeat", "0"])  # nor does it hide a bad value


def test_run_attention_rows():
    settings = _settings(["--device", "cpu", "--warmup", "0", "--repeat", "1"])
    shape = attention.AttentionShape("t", 2, 2, 8, 12, 16, key_lengths=(12, 5))
    rows = attention.run_attention(shape, "fp32", "fwd+bwd", settings)
    assert [r["backend"] for r in rows] == attention.attention_backends(torch.device("cpu"))
    sdpa = [r for r in rows if r["backend"].startswith("sdpa-") and r["status"] == "ok"]
    assert sdpa and min(r["vs_best_sdpa"] for r in sdpa) == 1.0
    assert all(r["max_abs_err"] < 1e-5 for r in rows if r["status"] == "ok")
    assert all(r["flops"] == 3.5 * 4 * 2 * 8 * 16 * 17 for r in rows)
    failed = {**rows[0], "backend": "sdpa-efficient", "status": "unsupported: no kernel"}
    for key in ("median_ms", "vs_best_sdpa"):
        failed.pop(key)
    table, columns = attention.summarize_cases(rows + [failed], attention.SUMMARIES["attention"][0], "vs_best_sdpa")
    assert len(table) == 1 and columns[-1] == "sdpa-efficient" and table[0]["sdpa-efficient"] is None
    best = min(sdpa, key=lambda r: r["median_ms"])
    assert table[0][best["backend"]] == f"{best['median_ms']:.3g} (1.00x)"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (the gpu extra)")
@pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1", reason="needs CUDA or the interpreter"
)
def test_triton_backends_agree_with_reference():
    # the GPU rows' call path, run in Triton's CPU interpreter on a tiny case
    lengths = torch.tensor([16, 5])
    q, k, v = attention.make_inputs([(2, 1, 16, 16)] * 3, torch.float32, torch.device("cpu"), 0, True)
    call = attention.runner(lambda *a: attention.attention_call("triton", *a), [q, k, v], lengths, True, 0)
    truth = attention.runner(lambda *a: attention.attention_call("reference", *a), [q, k, v], lengths, True, 0)
    assert attention.max_abs_diff(call(), truth()) < 1e-4
    h, w = attention.make_inputs([(2, 16, 16), (16,)], torch.float32, torch.device("cpu"), 0, True)
    pooled = attention.runner(lambda *a: attention.pool_call("triton", *a), [h, w], lengths, True, 0)
    unfused = attention.runner(lambda *a: attention.pool_call("torch", *a), [h, w], lengths, True, 0)
    assert attention.max_abs_diff(pooled(), unfused()) < 1e-4


def test_models_options():
    parse = bench_models.build_parser().parse_args
    s = bench_models.resolve_settings(parse(["--device", "cpu", "--models", "cat", "--pad-to", "batch"]))
    assert s.models == ("cat",) and s.pad_to == ("batch",) and s.batch == 40 and s.devices == (torch.device("cpu"),)
    assert bench_models.resolve_settings(parse(["--clock", "cpu", "--device", "cpu"])).clock == "cpu"
    quick = bench_models.resolve_settings(parse(["--quick", "--device", "cpu"]))
    assert quick.models == ("cnn", "cat") and quick.pad_to == ("full", "batch")
    with pytest.raises(ConfigError, match="unknown network"):
        bench_models.resolve_settings(parse(["--models", "nope"]))


def test_models_quick_changes_only_the_defaults():
    parse = bench_models.build_parser().parse_args
    quick = bench_models.resolve_settings(parse(["--quick", "--device", "cpu"]))
    assert (quick.models, quick.batch, quick.train_steps, quick.warmup, quick.repeat) == (("cnn", "cat"), 4, 2, 1, 3)
    given = ["--models", "ilt", "--batch", "8", "--train-steps", "3", "--warmup", "0", "--repeat", "50"]
    s = bench_models.resolve_settings(parse(["--quick", "--device", "cpu", *given]))
    assert (s.models, s.batch, s.train_steps, s.warmup, s.repeat) == (("ilt",), 8, 3, 0, 50)
    full = bench_models.resolve_settings(parse(["--device", "cpu"]))
    assert (full.models, full.batch, full.train_steps, full.warmup, full.repeat) == (tuple(models.MODELS), 40, 5, 2, 10)


def test_train_and_frontend_quick_change_only_the_defaults():
    bench_train, frontend = _load("train"), _load("frontend")
    resolve = bench_train.resolve
    parse = bench_train.build_parser().parse_args
    assert (resolve(parse([])).epochs, resolve(parse(["--quick"])).epochs) == (3, 2)
    assert resolve(parse(["--quick", "--epochs", "4"])).epochs == 4
    # minser.train takes the last --subset: the one given wins
    assert resolve(parse(["--quick", "--train-arg=--subset=20"])).train_arg == ["--subset=6", "--subset=20"]
    counts = frontend.resolve_counts
    parse = frontend.build_parser().parse_args
    assert (counts(parse([])), counts(parse(["--quick"]))) == ((None, 7), (8, 2))
    assert counts(parse(["--quick", "--repeat", "5", "--utterances", "20"])) == (20, 5)


@pytest.mark.parametrize("script", ["attention", "models", "frontend", "train"])
def test_help_says_quick_changes_only_defaults(script, capsys):
    with pytest.raises(SystemExit):
        _load(script).main(["--help"])
    assert "options given explicitly win" in " ".join(capsys.readouterr().out.split())


def test_training_batches_follow_minser_train():
    lengths = torch.tensor([100, 700, 120, 680, 110, 690, 130, 710])
    full = bench_models.training_batches(lengths, 4, 3, "full", seed=0)
    batch = bench_models.training_batches(lengths, 4, 3, "batch", seed=0)
    assert len(full) == len(batch) == 3 and all(len(b) == 4 for b in full + batch)
    # length bucketing puts the short and the long utterances in separate batches
    assert sorted(int(b.max()) for b in batch[:2]) == [130, 710]
    with pytest.raises(ConfigError, match="--batch 9: larger than the 8 utterances"):
        bench_models.training_batches(lengths, 9, 1, "full", seed=0)
    assert bench_models.real_time_factor(750.0, 1) == 0.1
    assert math.isclose(bench_models.real_time_factor(3000.0, 40), 0.01)


def test_models_batch_larger_than_the_utterances_fails_before_any_timing(monkeypatch, capsys):
    def timed(*args):
        raise AssertionError("a network was timed before --batch was checked")

    monkeypatch.setattr(bench_models, "bench_model", timed)
    with pytest.raises(SystemExit) as exit_info:
        bench_models.main(["--device", "cpu", "--models", "cnn", "--batch", "100000"])
    assert exit_info.value.code == 2
    assert "error: --batch 100000: larger than the" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Shared helpers


def test_summarize_median_and_spread():
    t = common.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (t.median_ms, t.p25_ms, t.p75_ms, t.min_ms, t.n) == (3.0, 2.0, 4.0, 1.0, 5)
    assert math.isclose(t.spread_pct, 100 * 2 / 3)
    assert common.summarize([2.0]).spread_pct == 0.0
    with pytest.raises(ValueError):
        common.summarize([])


def test_measure_counts_calls():
    calls = []
    timing = common.measure(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeat=4)
    assert len(calls) == 6 and timing.n == 4 and timing.min_ms >= 0
    assert common.peak_memory_bytes(lambda: None, torch.device("cpu")) is None
    assert common.measure(lambda: sum(range(10000)), torch.device("cpu"), warmup=0, repeat=2, clock_name="cpu").n == 2
    with pytest.raises(ValueError, match="clock"):
        common.measure(lambda: None, torch.device("cpu"), clock_name="sundial")


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "sub" / "out.json"
    common.write_json(path, {"a": [1, 2.5, None]})
    assert json.loads(path.read_text()) == {"a": [1, 2.5, None]}
    with pytest.raises(ValueError):
        common.write_json(path, {"a": float("nan")})  # NaN is not JSON: refused, old file kept
    assert json.loads(path.read_text()) == {"a": [1, 2.5, None]}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_format_table():
    text = common.format_table([{"a": 1.23456, "b": None}, {"a": 10, "b": "xy"}], ["a", "b"])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "b"] and lines[2].split() == ["1.23", "-"] and lines[3].split() == ["10", "xy"]
    assert len({len(line) for line in lines}) == 1
    md = common.format_table([{"a": 1.23456, "b": None}], ["a", "b"], markdown=True).splitlines()
    assert md == ["|    a | b |", "|-----:|--:|", "| 1.23 | - |"]


def test_environment_names_versions_and_commit():
    info = common.environment(torch.device("cpu"))
    assert info["torch"] == torch.__version__ and info["numpy"] == np.__version__
    assert info["cpu_count"] == os.cpu_count() and info["torch_threads"] == torch.get_num_threads()
    assert info["git_commit"] is None or len(info["git_commit"].removesuffix("-dirty")) == 40
    json.dumps(info)


def test_emodb_durations_real(emodb_root, monkeypatch):
    monkeypatch.setenv("MINSER_DATA", str(emodb_root.parent))
    durations, source = common.emodb_durations()
    assert len(durations) == 535 and "EmoDB wav headers" in source
    assert 1.2 < durations.min() < 1.3 and 8.9 < durations.max() < 9.0


def test_emodb_durations_synthetic(tmp_path, monkeypatch):
    monkeypatch.setenv("MINSER_DATA", str(tmp_path))  # a data folder without EmoDB
    durations, source = common.emodb_durations()
    again, _ = common.emodb_durations()
    assert "synthetic" in source and len(durations) == 535 and np.array_equal(durations, again)
    assert f"EmoDB not found: {tmp_path / 'emodb'}" in source and "python -m minser.data download emodb" in source
    assert durations.min() >= 1.23 and durations.max() <= 8.98 and 2.5 < durations.mean() < 3.1
    frames = common.sample_frame_lengths(durations, 40, seed=1)
    assert frames.shape == (40,) and frames.min() >= 124 and frames.max() <= 750
    assert np.array_equal(frames, common.sample_frame_lengths(durations, 40, seed=1))


@pytest.mark.filterwarnings("ignore:EmoDB folder .* holds 3 of the corpus' 535 files")
def test_emodb_is_found_where_the_library_looks(emodb_root, tmp_path, monkeypatch):
    """With MINSER_DATA unset the library reads EmoDB from the per-user cache folder, and .WAV files too; the
    benches looked under $MINSER_DATA only, for *.wav, and silently timed synthetic stand-ins instead."""
    wav = tmp_path / "cache" / "minser" / "emodb" / "wav"
    wav.mkdir(parents=True)
    for name in ("03a01Fa", "03a01Nc", "03a01Wa"):
        (wav / f"{name}.{'WAV' if name == '03a01Nc' else 'wav'}").symlink_to(emodb_root / "wav" / f"{name}.wav")
    monkeypatch.delenv("MINSER_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    durations, source = common.emodb_durations()
    assert source == f"EmoDB wav headers (3 files under {wav})" and len(durations) == 3
    waves, source = _load("frontend").load_utterances(None, seed=0)
    assert source == f"EmoDB, 3 files from {wav}" and len(waves) == 3


def test_frames_of_samples_matches_front_end_contract():
    assert common.frames_of_samples(np.array([0, 159, 160, 16000, 120000, 200000])).tolist() == [1, 1, 2, 101, 750, 750]


@pytest.mark.parametrize(("argv", "message"), [
    (["--repeat", "0"], "--repeat 0: give a positive number"),
    (["--tokens", "0"], "--tokens 0: give a positive number"),
    (["--hidden", "0"], "--hidden 0: give a positive number"),
    (["--max-len", "10"], "--max-len 10: the sweep starts at 128 steps"),
    (["--device", "tpu"], "--device tpu: only 'cpu' and 'cuda' are supported"),
])
def test_attention_refuses_zero_counts_rather_than_taking_them_for_defaults(argv, message):
    with pytest.raises(ConfigError, match=message):
        _settings(argv if "--device" in argv else [*argv, "--device", "cpu"])
    assert _settings(["--max-len", "10", "--no-sweep", "--device", "cpu"]).lengths == ()


@pytest.mark.parametrize(("script", "argv", "message"), [
    ("attention", ["--device", "tpu"], "--device tpu: only 'cpu' and 'cuda' are supported"),
    ("attention", ["--threads", "0"], "--threads 0: give a positive number"),
    ("attention", ["--head-dims", "64,x", "--device", "cpu"], "--head-dims '64,x': give comma-separated positive"),
    ("attention", ["--repeat", "0", "--device", "cpu"], "--repeat 0: give a positive number"),
    # empty tables and status 0 before
    ("attention", ["--no-sweep", "--no-models", "--device", "cpu"], "nothing to time: no attention or pool case"),
    ("attention", ["--op", "pool", "--no-sweep", "--models", "cat", "--quick", "--device", "cpu"],
     "nothing to time: no pool case comes from the networks"),
    ("attention", ["--warmup", "-1", "--device", "cpu"], "--warmup -1: give 0 or more"),
    ("attention", ["--seed", "-1", "--device", "cpu"], "--seed -1: give 0 or more"),  # a numpy traceback before
    ("attention", ["--models", "nope", "--no-sweep", "--device", "cpu"], "--models: unknown network(s) ['nope']"),
    ("models", ["--models", "nope", "--device", "cpu"], "--models: unknown network(s) ['nope']"),
    ("attention", ["--models", "", "--no-sweep", "--device", "cpu"], "--models '': an empty network name"),
    ("models", ["--models", "cat,", "--device", "cpu"], "--models 'cat,': an empty network name"),
    ("models", ["--repeat", "0", "--device", "cpu"], "--repeat 0: give a positive number"),
    ("models", ["--train-steps", "0", "--device", "cpu"], "--train-steps 0: give a positive number"),
    ("models", ["--device", "tpu"], "--device tpu: only 'cpu' and 'cuda' are supported"),
    ("frontend", ["--repeat", "0"], "--repeat 0: give a positive number"),
    ("frontend", ["--utterances", "0"], "--utterances 0: give a positive number"),
    ("frontend", ["--seed", "-1"], "--seed -1: give 0 or more"),  # a numpy traceback on the synthetic fallback
    ("train", ["--device", "tpu"], "--device tpu: only 'cpu' and 'cuda' are supported"),
    ("train", ["--epochs", "1"], "--epochs 1: give 2 or more"),
    ("train", ["--threads", "0"], "--threads 0: give a positive number"),
])
def test_bad_option_values_exit_2_with_usage(script, argv, message, capsys):
    # argparse's convention, as for an unknown option: the usage line, "PROG: error: ...", status 2.
    with pytest.raises(SystemExit) as exit_info:
        _load(script).main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("usage: ") and f"error: {message}" in err and "Traceback" not in err


def test_train_bench_reports_missing_data_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINSER_DATA", str(tmp_path))
    assert _load("train").main(["--quick", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: EmoDB not found") and "python -m minser.data download emodb" in err
    assert "--download" not in err and len(err.splitlines()) == 1  # minser.train's flag, which this script lacks


@pytest.mark.parametrize(("train_arg", "flag"), [
    # given again, the last --pad-to wins: both rows would run alike under their two labels
    (["--pad-to=batch"], "--pad-to"),
    (["--epochs=3"], "--epochs"),
    # read as minser.train reads them: abbreviations and a value in the next argument count
    (["--pad=batch"], "--pad-to"),
    (["--epoch=50"], "--epochs"),
    (["--fold", "2"], "--folds"),
])
def test_train_bench_refuses_train_args_it_sets_itself(train_arg, flag, monkeypatch, capsys):
    bench_train = _load("train")

    def train(argv):
        raise AssertionError(f"trained with --train-arg {train_arg}")

    monkeypatch.setattr(bench_train, "train", train)
    with pytest.raises(SystemExit) as exit_info:
        bench_train.main(["--device", "cpu", *(f"--train-arg={arg}" for arg in train_arg)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("usage: ")
    assert (f"error: --train-arg gives minser.train's {flag}, which bench/train.py sets itself (it runs fold 1 of each "
            "padding mode in a temporary folder, with its own --model, --epochs, --threads and --device); drop it"
            in " ".join(err.split()))


def test_train_bench_passes_other_train_args():
    bench_train = _load("train")
    bench_train._check_train_args(["--subset=20", "--protocol", "speaker", "--model-opt", "d_model=8"])
    assert dict(given_settings(["--pad", "batch", "--sub=3"])) == {"subset": "--subset", "pad_to": "--pad-to"}


@pytest.mark.parametrize(("protocol", "folds"), [("random", 5), ("speaker", 10), ("all", 1)])
def test_train_bench_extrapolates_to_the_protocols_folds(protocol, folds, emodb_root, tmp_path, monkeypatch, capsys):
    """The extrapolation assumed 5 folds whatever --train-arg=--protocol picked."""
    bench_train = _load("train")

    def train(argv):  # minser.train stood in for: one second per epoch
        out = Path(argv[argv.index("--out") + 1])
        (out / "fold-1").mkdir(parents=True)
        history = [{"seconds": 1.0, "cpu_seconds": 1.0}] * int(argv[argv.index("--epochs") + 1])
        (out / "fold-1" / "metrics.json").write_text(json.dumps({"history": history}))

    monkeypatch.setattr(bench_train, "train", train)
    path = tmp_path / "train.json"
    assert bench_train.main(["--epochs", "2", "--device", "cpu", "--threads", str(torch.get_num_threads()),
                             f"--train-arg=--protocol={protocol}", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{protocol} protocol ({folds} folds)" in out
    assert f"EXTRAPOLATION (not a full run): {folds} folds x 100 epochs" in out
    payload = json.loads(path.read_text())
    assert payload["protocol_folds"] == folds
    for run in payload["runs"]:
        assert run["extrapolated_protocol_min"] == pytest.approx((run["setup_s"] + folds * 100 * 1.0) / 60)


@pytest.mark.parametrize("interrupt", ["RunInterrupted", "KeyboardInterrupt"])
def test_train_bench_ctrl_c_says_to_rerun_the_benchmark(interrupt, emodb_root, tmp_path, monkeypatch, capsys):
    """Ctrl-C gave a traceback ending in RunInterrupted's advice: --resume (no option of this script) in a
    temporary folder already deleted."""
    from minser.train import INTERRUPTED_STATUS, RunInterrupted

    bench_train = _load("train")

    def train(argv):
        out = Path(argv[argv.index("--out") + 1])
        raise RunInterrupted(out) if interrupt == "RunInterrupted" else KeyboardInterrupt()

    monkeypatch.setattr(bench_train, "train", train)
    argv = ["--quick", "--device", "cpu", "--json", str(tmp_path / "a b.json")]
    assert bench_train.main(argv) == INTERRUPTED_STATUS
    assert capsys.readouterr().err.splitlines() == [
        "interrupted: the benchmark stopped before it finished and kept nothing; rerun it: "
        f"{shlex.join(['python', 'bench/train.py', *argv])}"]


def test_train_bench_reports_errors_of_the_training_in_one_line(emodb_root, monkeypatch, capsys):
    bench_train = _load("train")

    def train(argv):
        raise MinserError("fold-1: a corrupt file")

    monkeypatch.setattr(bench_train, "train", train)
    assert bench_train.main(["--quick", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "error: fold-1: a corrupt file\n"


@pytest.mark.parametrize("script", ["attention", "models", "frontend", "train"])
@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_bad_json_path_is_refused_before_any_timing(script, where, tmp_path, monkeypatch, capsys):
    """--json was written after the whole benchmark had run: a bad path lost its results."""
    module = _load(script)

    def timed(*args):
        raise AssertionError("the benchmark started before --json was checked")

    monkeypatch.setattr(module.common, "environment", timed)
    (tmp_path / "file").write_text("")
    path, message = {"folder": (tmp_path, f"--json {tmp_path}: is a folder; name a file to write"),
                     "under a file": (tmp_path / "file" / "out.json", f"--json {tmp_path / 'file' / 'out.json'}: "
                                      f"{tmp_path / 'file'} is a file, not a folder; choose another folder")}[where]
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--json", str(path), *(["--device", "cpu"] if script != "frontend" else [])])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("usage: ") and f"error: {message}" in err


def test_check_json_accepts_a_file_in_folders_to_create(tmp_path):
    common.check_json(None)
    common.check_json(str(tmp_path / "new" / "sub" / "out.json"))  # write_json creates the folders
    assert list(tmp_path.iterdir()) == []


def test_check_json_refuses_a_file_the_script_reads(tmp_path):
    """bench/inference.py --model m.pt --json m.pt overwrote the checkpoint with the results."""
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    with pytest.raises(ConfigError, match=f"^--json {re.escape(str(model))} is {re.escape(str(model))}, which --model "
                                          "reads: writing it would destroy it; name another file$"):
        common.check_json(str(model), inputs=[("--model", model)])
    common.check_json(str(tmp_path / "out.json"), inputs=[("--model", model)])
    assert model.read_bytes() == b"weights"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_check_json_refuses_a_folder_it_cannot_write_in(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match=f"^--json {re.escape(str(locked))}/out.json: cannot write in "):
        common.check_json(str(locked / "out.json"))


def test_frontend_without_librosa_says_what_to_install(monkeypatch, capsys):
    """librosa was imported at the top: even --help ended in ModuleNotFoundError without the dev extra."""
    monkeypatch.setitem(sys.modules, "librosa", None)  # import librosa raises ImportError
    spec = importlib.util.spec_from_file_location("bench_frontend_without_librosa", BENCH / "frontend.py")
    frontend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frontend)
    with pytest.raises(SystemExit) as exit_info:
        frontend.main(["--help"])
    assert exit_info.value.code == 0 and "--quick" in capsys.readouterr().out
    assert frontend.main(["--quick"]) == 2
    assert capsys.readouterr().err == "error: bench/frontend.py needs librosa (pip install librosa, or the dev extra)\n"


def test_models_help_states_that_it_runs_cpu_and_cuda_without_device(capsys):
    """The shared help said cuda when present, else cpu: without --device it times the CPU and the CUDA device."""
    text = " ".join(bench_models.build_parser().format_help().split())
    assert ("--device DEVICE 'cpu' or 'cuda': time that device only (default: the CPU, then the CUDA device when "
            "present)") in text


def test_models_batch_1_times_batch_1_once(monkeypatch, capsys):
    """--batch 1 printed the b1_* columns twice and timed batch 1 twice, the second overwriting the first."""
    timed = []
    latency = bench_models.latency
    monkeypatch.setattr(bench_models, "latency",
                        lambda model, batch, *args: timed.append(batch) or latency(model, batch, *args))
    settings = bench_models.resolve_settings(bench_models.build_parser().parse_args(
        ["--device", "cpu", "--models", "cnn", "--batch", "1", "--train-steps", "1", "--warmup", "0", "--repeat", "1",
         "--pad-to", "batch"]))
    payload = bench_models.run(settings)
    header = next(line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("model"))
    assert timed == [1] and header.split() == ["model", "device", "params", "b1_ms", "b1_spread_pct", "b1_rtf",
                                               "b1_vs_cnn", "train_batch_utt_s"]
    assert payload["results"][0]["b1_vs_cnn"] == 1.0


TOOLS = BENCH.parent / "tools"


@pytest.mark.parametrize(("script", "shown"), [(BENCH / "train.py", "network to train (default: cat)"),
                                              (TOOLS / "reproduce.py", "epochs per fold (default: 100)"),
                                              (TOOLS / "svm_baseline.py", "splits (default: random)")])
def test_script_help_states_the_defaults(script: Path, shown: str) -> None:
    """These help texts left their defaults out; a repeatable option's empty list is not one to show."""
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and shown in text and "(default: [])" not in text


@pytest.mark.parametrize(("argv", "message"), [
    (["model_table.py", "--models", "cnn", "--batch", "0"], "model_table.py: error: --batch 0: give a positive number"),
    # The network's own message advised lengths.clamp(min=15), which this tool's user cannot give.
    (["model_table.py", "--models", "cnn", "--frames", "10", "--repeats", "1", "--batch", "1"],
     "model_table.py: error: --frames 10: cnn needs utterances of at least 15 frames; give --frames 15 or more\n"),
    *[pytest.param(argv, message, marks=pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                                          reason="kernel_report.py needs triton (the gpu extra)"))
      for argv, message in [
          (["kernel_report.py", "--jobs", "0"], "kernel_report.py: error: --jobs 0: give a positive number of processes"),
          (["kernel_report.py", "--only", "nothing"],
           "kernel_report.py: error: --only 'nothing': no kernel label contains it")]],
])
def test_tools_refuse_nonsense_options_without_a_traceback(argv, message):
    # kernel_report.py is refused before it compiles anything, so this runs in seconds.
    proc = subprocess.run([sys.executable, str(TOOLS / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


# tools/kernel_report.py with one of its functions or its ptxas path replaced (``patch``, Python run after the import).
_PATCHED_KERNEL_REPORT = """
import importlib.util, sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("kernel_report", {script!r})
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)
{patch}
sys.exit(report.main(sys.argv[1:]))
"""
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="kernel_report.py needs triton (the gpu extra)")


def _kernel_report(patch: str, *argv: str) -> subprocess.CompletedProcess:
    child = _PATCHED_KERNEL_REPORT.format(script=str(TOOLS / "kernel_report.py"), patch=patch)
    return subprocess.run([sys.executable, "-c", child, *argv], capture_output=True, text=True, timeout=120)


@needs_triton
def test_kernel_report_without_ptxas_blackwell_says_which_triton_has_it(tmp_path):
    """Triton 3.0 to 3.5 (which the gpu extra allows) ship only ptxas: a FileNotFoundError traceback after compiling."""
    from importlib.metadata import version

    missing = tmp_path / "bin" / "ptxas-blackwell"
    proc = _kernel_report(f"report.PTXAS = Path({str(missing)!r})\n"
                          "report.compile_all = lambda *args: sys.exit('compiled')")
    assert proc.returncode == 2 and proc.stderr.endswith(
        f"error: {missing} is missing: triton {version('triton')} ships no ptxas-blackwell, which this report "
        "assembles with; pip install 'triton>=3.6'\n"), proc.stderr[-2000:]


@needs_triton
def test_kernel_report_checks_json_before_compiling_and_reports_a_failed_write(tmp_path):
    """--json under a file was a ConfigError traceback once every kernel had compiled (minutes)."""
    (tmp_path / "file").write_text("")
    under_file = tmp_path / "file" / "report.json"
    proc = _kernel_report("report.compile_all = lambda *args: sys.exit('compiled')", "--json", str(under_file))
    assert proc.returncode == 2 and (f"error: --json {under_file}: {tmp_path / 'file'} is a file, not a folder; choose "
                                     "another folder\n") in proc.stderr and "compiled" not in proc.stderr
    # A folder made where --json points while it compiled: one line, exit 2, not a traceback.
    later = tmp_path / "later.json"
    proc = _kernel_report(f"report.compile_all = lambda *args: Path({str(later)!r}).mkdir() or []", "--json", str(later))
    assert proc.returncode == 2 and proc.stderr == f"error: {later} is a folder; name a file to write\n", proc.stderr


# A reproduce.py run whose training is minser.train's main stood in for: t1-ilt-concat finishes, then the
# next row is interrupted as Ctrl-C interrupts minser.train (RunInterrupted) or anything else (KeyboardInterrupt).
_INTERRUPTED_REPRODUCE = """
import importlib.util, sys
from pathlib import Path
from minser.train import RunInterrupted

spec = importlib.util.spec_from_file_location("reproduce", {script!r})
reproduce = importlib.util.module_from_spec(spec)
sys.modules["reproduce"] = reproduce  # dataclasses look their module up there
spec.loader.exec_module(reproduce)

def train(argv):
    out = Path(argv[argv.index("--out") + 1])
    if out.name == "t1-ilt-concat":
        return {{"wa": 50.0, "wa_std": 0.0, "ua": 40.0, "ua_std": 0.0, "folds": [{{}}]}}
    raise {interrupt}

reproduce.train = train
sys.exit(reproduce.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("interrupt", ["RunInterrupted(out)", "KeyboardInterrupt()"])
def test_reproduce_ctrl_c_says_to_rerun_the_same_command(tmp_path: Path, interrupt: str) -> None:
    """Ctrl-C printed a traceback ending in RunInterrupted's advice, `python -m minser.train --resume`, for
    the row's one run; rerunning reproduce.py is what continues it and the rows after it."""
    argv = ["--rows", "t1-ilt-concat,t1-ilt-attention", "--epochs", "1", "--out", str(tmp_path / "rep dir")]
    child = _INTERRUPTED_REPRODUCE.format(script=str(TOOLS / "reproduce.py"), interrupt=interrupt)
    proc = subprocess.run([sys.executable, "-c", child, *argv], capture_output=True, text=True, timeout=120)
    err = proc.stderr
    assert proc.returncode == 130 and "Traceback" not in err and "--resume" not in err, err[-3000:]
    assert err.splitlines() == [f"interrupted in row t1-ilt-attention; to continue, rerun the same command: "
                                f"python tools/reproduce.py {shlex.join(argv)} (the runs finished earlier are "
                                "reused, the interrupted one resumes from its last completed epoch)"]
    assert "| t1-ilt-concat |" in (tmp_path / "rep dir" / "results.md").read_text()  # the finished row's kept
