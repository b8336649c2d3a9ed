"""Benchmark minser's attention kernels against PyTorch: ``python bench/attention.py --help``.

Two ops, each forward (``fwd``) and forward+backward (``fwd+bwd``):

- ``attention``: ``minser.kernels.attention`` with ``impl="triton"`` (the fused Triton kernel),
  ``torch.nn.functional.scaled_dot_product_attention`` under each backend the device offers
  (flash, memory-efficient, cuDNN, math; each forced alone with ``torch.nn.attention.sdpa_kernel``,
  a backend that cannot run a case is reported as unsupported), and the plain
  matmul-softmax-matmul reference (``impl="torch"``).
- ``pool``: attention pooling, ``minser.kernels.attention_pool`` with ``impl="triton"`` (fused)
  against ``impl="torch"`` (the unfused PyTorch ops).

Shapes: the ones minser's networks run, captured by running every registry network of
``minser.models`` once on a batch of 40 utterances with EmoDB-like lengths (so the heads, head
size, CNN and LSTM step counts and key lengths are exactly the models'), each with and without its
padding mask; plus a sweep of sequence lengths up to ``--max-len`` and head sizes 32, 64, 128
(``--tokens`` queries per case in all, ``--hidden`` = heads x head size, as in FlashAttention's
benchmarks), unmasked; pooling is swept over the same lengths at widths ``--pool-dims`` (64, 512) and
batch ``--batch`` (40). Every masked sequence keeps at least one valid key (SDPA gives NaN on a fully
masked row).

FLOP counts (hand-counted; masked keys excluded, padded queries included since every kernel
computes them). With ``Lk_valid(b)`` the valid keys of batch element ``b``:

- attention forward: ``4 * H * Lq * D * sum_b Lk_valid(b)`` (``Q K^T`` and ``P V``, 2 FLOPs per
  multiply-add each); backward: 2.5x forward (``dV = P^T dO``, ``dP = dO V^T``, ``dQ = dS K``,
  ``dK = dS^T Q`` are 2x, recomputing ``Q K^T`` is 0.5x: FlashAttention's convention, used for
  every backend so that TFLOP/s compares like time); ``fwd+bwd`` = 3.5x forward. Softmax and
  scaling are not counted.
- pool forward: ``4 * D * sum_b T_valid(b)`` (scores ``h . w`` and the weighted sum); backward
  2x forward; ``fwd+bwd`` = 3x forward. Pooling is memory-bound, so GB/s is reported too, from
  the bytes a fused kernel must move: forward reads ``h`` and ``w`` and writes the pooled vector
  and the weights; backward reads ``h``, ``dpooled`` and the weights and writes ``dh`` and ``dw``.

Each case reports the median time and its spread over ``--repeat`` runs after ``--warmup``
(CUDA events on GPU), TFLOP/s, peak extra GPU memory, the ratio to the fastest SDPA backend
(attention) or to the unfused PyTorch ops (pool), and the largest absolute difference from the
float32 reference (outputs for ``fwd``, input gradients for ``fwd+bwd``).

Without a CUDA device it still runs: it times the PyTorch paths on CPU in float32 only and says
that the Triton path needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from minser import models  # noqa: E402
from minser.errors import ConfigError  # noqa: E402
from minser.kernels import attention as minser_attention  # noqa: E402
from minser.kernels import attention_pool as minser_attention_pool  # noqa: E402
from minser.kernels import reference  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PASSES = ("fwd", "fwd+bwd")
OPS = ("attention", "pool")
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH",
}
MODEL_BATCH = 40
SWEEP_MIN = 128  # shortest sweep length, a power of two
N_MELS = 40


@dataclass(frozen=True)
class AttentionShape:
    """One attention problem: q ``(batch, heads, q_len, head_dim)``, k and v ``(batch, heads, k_len, head_dim)``.

    ``key_lengths`` holds the valid keys of each batch element (``None``: no padding mask).
    """

    label: str
    batch: int
    heads: int
    q_len: int
    k_len: int
    head_dim: int
    key_lengths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if min(self.batch, self.heads, self.q_len, self.k_len, self.head_dim) < 1:
            raise ValueError(f"{self.label}: every size must be positive, got {self}")
        if self.key_lengths is not None:
            if len(self.key_lengths) != self.batch:
                raise ValueError(f"{self.label}: {len(self.key_lengths)} key lengths for batch {self.batch}")
            if not all(1 <= n <= self.k_len for n in self.key_lengths):
                raise ValueError(
                    f"{self.label}: key lengths must lie in [1, {self.k_len}] (SDPA gives NaN on empty rows)"
                )

    @property
    def valid_keys(self) -> int:
        """Valid keys summed over the batch."""
        return self.batch * self.k_len if self.key_lengths is None else sum(self.key_lengths)


@dataclass(frozen=True)
class PoolShape:
    """One attention-pooling problem: h ``(batch, steps, dim)``, w ``(dim,)``; ``lengths`` valid steps or ``None``."""

    label: str
    batch: int
    steps: int
    dim: int
    lengths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if min(self.batch, self.steps, self.dim) < 1:
            raise ValueError(f"{self.label}: every size must be positive, got {self}")
        if self.lengths is not None and (
            len(self.lengths) != self.batch or not all(1 <= n <= self.steps for n in self.lengths)
        ):
            raise ValueError(f"{self.label}: need {self.batch} lengths in [1, {self.steps}]")

    @property
    def valid_steps(self) -> int:
        """Valid steps summed over the batch."""
        return self.batch * self.steps if self.lengths is None else sum(self.lengths)


def attention_flops(shape: AttentionShape, pass_: str) -> int:
    """FLOPs of one attention call (see the module docstring): forward, or forward plus backward."""
    forward = 4 * shape.heads * shape.q_len * shape.head_dim * shape.valid_keys
    return forward if pass_ == "fwd" else forward * 7 // 2


def pool_flops(shape: PoolShape, pass_: str) -> int:
    """FLOPs of one attention-pooling call (see the module docstring)."""
    forward = 4 * shape.dim * shape.valid_steps
    return forward if pass_ == "fwd" else 3 * forward


def pool_bytes(shape: PoolShape, pass_: str, element_size: int) -> int:
    """Bytes a fused attention-pooling kernel must move at least (see the module docstring)."""
    b, t, d = shape.batch, shape.steps, shape.dim
    forward = b * t * d + d + b * d + b * t
    backward = b * t * d + b * d + b * t + b * t * d + d
    return element_size * (forward if pass_ == "fwd" else forward + backward)


def sweep_shapes(lengths: Sequence[int], head_dims: Sequence[int], tokens: int, hidden: int) -> list[AttentionShape]:
    """Unmasked self-attention with ``batch = max(1, tokens // L)`` and ``heads = max(1, hidden // D)``."""
    return [
        AttentionShape("sweep", max(1, tokens // n), max(1, hidden // d), n, n, d)
        for d in head_dims
        for n in lengths
    ]


def pool_sweep_shapes(lengths: Sequence[int], dims: Sequence[int], batch: int) -> list[PoolShape]:
    """Unmasked pooling of ``batch`` sequences of each length and width."""
    return [PoolShape("sweep", batch, n, d) for d in dims for n in lengths]


def sweep_lengths(max_len: int, min_len: int = SWEEP_MIN) -> list[int]:
    """Powers of two from ``min_len`` up to ``max_len``."""
    if max_len < min_len:
        raise ValueError(f"max_len {max_len} is below {min_len}")
    return [2**i for i in range(int(math.log2(min_len)), int(math.log2(max_len)) + 1)]


def parse_shape(text: str) -> AttentionShape:
    """``B,H,Lq,Lk,D`` (unmasked) from the command line."""
    try:
        b, h, lq, lk, d = (int(x) for x in text.split(","))
        return AttentionShape(f"shape {text}", b, h, lq, lk, d)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: give five positive integers B,H,Lq,Lk,D ({e})") from None


def model_shapes(
    names: Sequence[str] | None, batch: int, seed: int = 0
) -> tuple[list[AttentionShape], list[PoolShape], str]:
    """The attention and pooling shapes minser's networks run, and a note on where they came from.

    Builds each network with default options and runs it once (CPU, eval, no grad) on ``batch``
    log-Mel inputs of 750 frames whose valid lengths follow EmoDB (:func:`_common.emodb_durations`),
    recording the arguments of every attention and pooling call on the PyTorch path. Each shape is
    returned masked (the model's key lengths) and unmasked; duplicates are dropped.
    """
    durations, source = common.emodb_durations()
    lengths = torch.from_numpy(common.sample_frame_lengths(durations, batch, seed))
    features = torch.randn(batch, N_MELS, common.MAX_FRAMES, generator=torch.Generator().manual_seed(seed))
    calls: list[tuple[str, str, tuple]] = []
    original_attention, original_pool = reference.attention, reference.attention_pool

    def record_attention(q, k, v, key_lengths=None):
        calls.append(("attention", current, (tuple(q.shape), tuple(k.shape), key_lengths)))
        return original_attention(q, k, v, key_lengths)

    def record_pool(h, w, lengths=None):
        calls.append(("pool", current, (tuple(h.shape), lengths)))
        return original_pool(h, w, lengths)

    reference.attention, reference.attention_pool = record_attention, record_pool
    try:
        for current in names or models.MODELS:
            model = models.build(current, 4).eval()
            with torch.no_grad():
                model(features, lengths)
    finally:
        reference.attention, reference.attention_pool = original_attention, original_pool
    # One shape per distinct problem; its label lists every network that runs it.
    attention: dict[AttentionShape, list[str]] = {}
    pool: dict[PoolShape, list[str]] = {}
    for op, name, args in calls:
        if op == "attention":
            (b, h, lq, d), (_, _, lk, _), kl = args
            kl = None if kl is None else tuple(int(n) for n in kl)
            for key_lengths in (kl, None):
                users = attention.setdefault(AttentionShape("", b, h, lq, lk, d, key_lengths), [])
                users += [name] if name not in users else []
        else:
            (b, t, d), sl = args
            sl = None if sl is None else tuple(int(n) for n in sl)
            for steps in (sl, None):
                users = pool.setdefault(PoolShape("", b, t, d, steps), [])
                users += [name] if name not in users else []
    attention_shapes = [
        replace(s, label=f"{'+'.join(users)} {'self' if s.q_len == s.k_len else 'cross'}")
        for s, users in attention.items()
    ]
    pool_shapes = [replace(s, label=f"{'+'.join(users)} pool") for s, users in pool.items()]
    return attention_shapes, pool_shapes, f"model shapes: batch {batch}, lengths from {source}"


def _sdpa_backend(name: str):
    from torch.nn.attention import SDPBackend

    return getattr(SDPBackend, SDPA_BACKENDS[name])


def attention_backends(device: torch.device) -> list[str]:
    """Backends to try on ``device``: Triton on CUDA, the SDPA backends torch knows, the reference."""
    from torch.nn.attention import SDPBackend

    sdpa = [f"sdpa-{n}" for n, member in SDPA_BACKENDS.items() if hasattr(SDPBackend, member)]
    if device.type != "cuda":
        sdpa = [b for b in sdpa if b in ("sdpa-flash", "sdpa-math")]  # the others are CUDA-only
    return (["triton"] if device.type == "cuda" else []) + sdpa + ["reference"]


def attention_call(backend: str, q, k, v, key_lengths: torch.Tensor | None) -> torch.Tensor:
    """One attention forward through ``backend``."""
    if backend == "triton":
        return minser_attention(q, k, v, key_lengths=key_lengths, impl="triton")
    if backend == "reference":
        return minser_attention(q, k, v, key_lengths=key_lengths, impl="torch")
    from torch.nn.attention import sdpa_kernel

    mask = None if key_lengths is None else reference.key_mask(key_lengths, k.shape[2])[:, None, None, :]
    with sdpa_kernel(_sdpa_backend(backend.removeprefix("sdpa-"))):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def pool_call(backend: str, h, w, lengths: torch.Tensor | None) -> torch.Tensor:
    """One attention-pooling forward (the pooled vector) through ``"triton"`` or ``"torch"``."""
    return minser_attention_pool(h, w, lengths=lengths, impl=backend)[0]


def make_inputs(shapes: Sequence[tuple[int, ...]], dtype, device, seed: int, backward: bool) -> list[torch.Tensor]:
    """Standard-normal tensors of the given shapes (leaves that need grad when ``backward``)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device, dtype).requires_grad_(backward) for s in shapes]


def runner(forward: Callable[..., torch.Tensor], inputs: list[torch.Tensor], extra, backward: bool, seed: int):
    """A no-argument callable for timing: forward (returns ``(out,)``) or forward+backward (returns input grads)."""
    if not backward:
        def run():
            with torch.no_grad():
                return (forward(*inputs, extra),)
        return run
    grad_out: list[torch.Tensor] = []

    def run():
        out = forward(*inputs, extra)
        if not grad_out:  # drawn on the first call, in the output's shape; same seed for every backend
            grad_out.append(make_inputs([out.shape], out.dtype, out.device, seed + 1, False)[0])
        return torch.autograd.grad(out, inputs, grad_out[0])

    return run


def max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Largest absolute elementwise difference over paired tensors, in float32."""
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on, resolved from the command line and the device."""

    device: torch.device
    ops: tuple[str, ...]
    dtypes: tuple[str, ...]
    passes: tuple[str, ...]
    lengths: tuple[int, ...]
    head_dims: tuple[int, ...]
    pool_dims: tuple[int, ...]
    tokens: int
    hidden: int
    use_models: bool
    models: tuple[str, ...] | None
    shapes: tuple[AttentionShape, ...]
    model_batch: int
    warmup: int
    repeat: int
    seed: int
    markdown: bool = False
    clock: str = "wall"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/attention.py",
        description="Time minser's attention and attention-pooling kernels against PyTorch SDPA and the unfused "
        "PyTorch reference, forward and forward+backward, on the shapes minser's networks run and a sweep.",
        epilog="Defaults depend on the device: on CPU float32 only, sweep up to 1024 steps, --tokens 2048, "
        "--hidden 512, --warmup 2 --repeat 7; on CUDA fp16, bf16 and fp32, up to 8192 steps, --tokens 16384, "
        "--hidden 2048, --warmup 10 --repeat 30. --quick: --models cat --batch 8 --max-len 128 --head-dims 64 "
        "--pool-dims 64 --warmup 1 --repeat 3, --tokens 512 --hidden 128 on CPU (4096 and 1024 on CUDA); "
        f"{common.QUICK_HELP}.",
    )
    common.add_common_arguments(parser)
    parser.add_argument("--op", choices=(*OPS, "all"), default="all", help="which op to time (default: all)")
    parser.add_argument("--dtype", action="append", choices=tuple(DTYPES), help="repeatable; CPU runs fp32 only")
    parser.add_argument("--pass", dest="passes", action="append", choices=PASSES, help="repeatable (default: both)")
    parser.add_argument("--max-len", type=int, help="longest sweep length (powers of two from 128)")
    parser.add_argument("--head-dims", help="sweep head sizes (default: 32,64,128)")
    parser.add_argument("--pool-dims", help="sweep widths of the pooling op (default: 64,512)")
    parser.add_argument("--tokens", type=int, help="queries per sweep case, batch x length")
    parser.add_argument("--hidden", type=int, help="heads x head size in the sweep")
    parser.add_argument("--models", help="comma-separated networks whose shapes to run (default: all; --quick: cat)")
    parser.add_argument("--no-models", action="store_true", help="skip the networks' shapes")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep")
    parser.add_argument("--shape", action="append", type=parse_shape, default=[], metavar="B,H,Lq,Lk,D",
                        help="extra unmasked attention shape (repeatable)")
    parser.add_argument("--batch", type=int, help=f"batch of the networks' shapes (default: {MODEL_BATCH}; --quick: 8)")
    parser.add_argument("--warmup", type=int, help="untimed calls before timing")
    parser.add_argument("--repeat", type=int, help="timed calls per case")
    parser.add_argument("--seed", type=int, default=0, help="seed of inputs and lengths (default: 0)")
    return parser


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give comma-separated positive integers") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{option} {text!r}: give comma-separated positive integers")
    return values


def defaults(quick: bool, gpu: bool) -> dict[str, object]:
    """The values of the options left unset, by device and ``--quick`` (see the parser's epilog)."""
    if quick:
        return {"max_len": 128, "head_dims": "64", "pool_dims": "64", "tokens": 4096 if gpu else 512,
                "hidden": 1024 if gpu else 128, "warmup": 1, "repeat": 3, "batch": 8, "models": "cat"}
    return {"max_len": 8192 if gpu else 1024, "head_dims": "32,64,128", "pool_dims": "64,512",
            "tokens": 16384 if gpu else 2048, "hidden": 2048 if gpu else 512, "warmup": 10 if gpu else 2,
            "repeat": 30 if gpu else 7, "batch": MODEL_BATCH, "models": None}


def resolve_settings(args: argparse.Namespace) -> Settings:
    """The options given, else the :func:`defaults` of the device and of ``--quick``; ConfigError on a bad value."""
    device = common.resolve_device(args.device)
    gpu = device.type == "cuda"
    dtypes = tuple(args.dtype or (("fp16", "bf16", "fp32") if gpu else ("fp32",)))
    if not gpu and dtypes != ("fp32",):
        print("note: on CPU only fp32 is timed (half precision is not what minser runs on CPU)")
        dtypes = ("fp32",)
    v = common.given_or_default(args, defaults(args.quick, gpu))
    common.check_counts({option: v[option] for option in ("batch", "tokens", "hidden", "repeat")})
    # Seeds >= 0: NumPy's generators refuse negative ones, which ended the run in a traceback at the lengths.
    common.check_counts({"warmup": v["warmup"], "seed": args.seed}, minimum=0)
    if v["max_len"] < SWEEP_MIN and not args.no_sweep:
        raise ConfigError(f"--max-len {v['max_len']}: the sweep starts at {SWEEP_MIN} steps; give {SWEEP_MIN} or "
                          "more, or --no-sweep")
    return Settings(
        device=device,
        ops=OPS if args.op == "all" else (args.op,),
        dtypes=dtypes,
        passes=tuple(args.passes or PASSES),
        lengths=() if args.no_sweep else tuple(sweep_lengths(v["max_len"])),
        head_dims=_int_list(v["head_dims"], "--head-dims"),
        pool_dims=_int_list(v["pool_dims"], "--pool-dims"),
        tokens=v["tokens"],
        hidden=v["hidden"],
        use_models=not args.no_models,
        models=common.network_names(v["models"]) if v["models"] is not None else None,
        shapes=tuple(args.shape),
        model_batch=v["batch"],
        warmup=v["warmup"],
        repeat=v["repeat"],
        seed=args.seed,
        markdown=args.markdown,
        clock=args.clock,
    )


def _attempt(fn: Callable[[], tuple], device: torch.device) -> tuple[tuple | None, str]:
    """Run ``fn`` once; ``(outputs, "ok")`` or ``(None, why it cannot run)``.

    A backend that cannot take a case (no kernel for this dtype, head size or mask; out of
    memory; a Triton build error) is reported in the table rather than stopping the run.
    """
    try:
        out = fn()
        common.synchronize(device)
        return out, "ok"
    except torch.cuda.OutOfMemoryError:
        return None, "out of memory"
    except Exception as e:  # noqa: BLE001 - any backend failure becomes a row, see the docstring
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"unsupported: {first_line[:120]}"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def time_case(
    row: dict, fn: Callable[[], tuple], truth: tuple | None, flops: int, settings: Settings, nbytes: int | None = None
) -> dict:
    """Check ``fn`` against ``truth`` (skipped when the float32 reference could not run), then time it."""
    out, status = _attempt(fn, settings.device)
    row["status"] = status
    if out is None:
        return row
    err = None if truth is None else max_abs_diff(out, truth)
    del out
    if err is not None and not math.isfinite(err):
        row["status"], err = "non-finite output", None
    row["max_abs_err"] = err
    row["peak_mib"] = None
    peak = common.peak_memory_bytes(fn, settings.device)
    if peak is not None:
        row["peak_mib"] = peak / 2**20
    timing = common.measure(
        fn, settings.device, warmup=settings.warmup, repeat=settings.repeat, clock_name=settings.clock
    )
    row["timing"] = timing.to_json()
    row["median_ms"], row["spread_pct"] = timing.median_ms, timing.spread_pct
    row["tflops"] = flops / (timing.median_ms * 1e-3) / 1e12
    if nbytes is not None:
        row["gbps"] = nbytes / (timing.median_ms * 1e-3) / 1e9
    return row


def _lengths_tensor(lengths: tuple[int, ...] | None, device: torch.device) -> torch.Tensor | None:
    return None if lengths is None else torch.tensor(lengths, dtype=torch.int64, device=device)


def run_attention(shape: AttentionShape, dtype_name: str, pass_: str, settings: Settings) -> list[dict]:
    """Every backend on one attention case; rows carry the ratio to the fastest SDPA backend."""
    device, backward = settings.device, pass_ == "fwd+bwd"
    qkv_shapes = [(shape.batch, shape.heads, shape.q_len, shape.head_dim)] + 2 * [
        (shape.batch, shape.heads, shape.k_len, shape.head_dim)
    ]
    key_lengths = _lengths_tensor(shape.key_lengths, device)
    inputs = make_inputs(qkv_shapes, DTYPES[dtype_name], device, settings.seed, backward)
    exact = [x.detach().float().requires_grad_(backward) for x in inputs]

    def forward(backend: str):
        return lambda q, k, v, kl: attention_call(backend, q, k, v, kl)

    truth, _ = _attempt(runner(forward("reference"), exact, key_lengths, backward, settings.seed), device)
    del exact
    flops = attention_flops(shape, pass_)
    rows = []
    for backend in attention_backends(device):
        row = {
            "op": "attention", "label": shape.label, "B": shape.batch, "H": shape.heads, "Lq": shape.q_len,
            "Lk": shape.k_len, "D": shape.head_dim, "masked": shape.key_lengths is not None,
            "valid_keys": shape.valid_keys, "dtype": dtype_name, "pass": pass_, "backend": backend, "flops": flops,
        }
        fn = runner(forward(backend), inputs, key_lengths, backward, settings.seed)
        rows.append(time_case(row, fn, truth, flops, settings))
    sdpa = [r["median_ms"] for r in rows if r["backend"].startswith("sdpa-") and "median_ms" in r]
    for row in rows:
        row["vs_best_sdpa"] = row["median_ms"] / min(sdpa) if sdpa and "median_ms" in row else None
    return rows


def run_pool(shape: PoolShape, dtype_name: str, pass_: str, settings: Settings) -> list[dict]:
    """Fused (Triton, CUDA only) and unfused attention pooling on one case; ratio to the unfused ops."""
    device, backward, dtype = settings.device, pass_ == "fwd+bwd", DTYPES[dtype_name]
    lengths = _lengths_tensor(shape.lengths, device)
    inputs = make_inputs([(shape.batch, shape.steps, shape.dim), (shape.dim,)], dtype, device, settings.seed, backward)
    exact = [x.detach().float().requires_grad_(backward) for x in inputs]

    def forward(backend: str):
        return lambda h, w, sl: pool_call(backend, h, w, sl)

    truth, _ = _attempt(runner(forward("torch"), exact, lengths, backward, settings.seed), device)
    del exact
    flops = pool_flops(shape, pass_)
    nbytes = pool_bytes(shape, pass_, torch.empty((), dtype=dtype).element_size())
    rows = []
    for backend in (["triton"] if device.type == "cuda" else []) + ["torch"]:
        row = {
            "op": "pool", "label": shape.label, "B": shape.batch, "T": shape.steps, "D": shape.dim,
            "masked": shape.lengths is not None, "valid_steps": shape.valid_steps, "dtype": dtype_name,
            "pass": pass_, "backend": backend, "flops": flops, "bytes": nbytes,
        }
        fn = runner(forward(backend), inputs, lengths, backward, settings.seed)
        rows.append(time_case(row, fn, truth, flops, settings, nbytes))
    unfused = [r["median_ms"] for r in rows if r["backend"] == "torch" and "median_ms" in r]
    for row in rows:
        row["vs_unfused"] = row["median_ms"] / unfused[0] if unfused and "median_ms" in row else None
    return rows


ATTENTION_COLUMNS = ("label", "B", "H", "Lq", "Lk", "D", "masked", "dtype", "pass", "backend", "median_ms",
                     "spread_pct", "tflops", "peak_mib", "vs_best_sdpa", "max_abs_err", "status")
POOL_COLUMNS = ("label", "B", "T", "D", "masked", "dtype", "pass", "backend", "median_ms", "spread_pct", "tflops",
                "gbps", "peak_mib", "vs_unfused", "max_abs_err", "status")
# op -> (columns naming a case, the ratio shown in the summary, what the ratio is against)
SUMMARIES = {
    "attention": (
        ("label", "B", "H", "Lq", "Lk", "D", "masked", "dtype", "pass"), "vs_best_sdpa", "the fastest SDPA backend"
    ),
    "pool": (("label", "B", "T", "D", "masked", "dtype", "pass"), "vs_unfused", "the unfused PyTorch ops"),
}


def summarize_cases(rows: Sequence[dict], case_columns: Sequence[str], ratio_key: str) -> tuple[list[dict], list[str]]:
    """One row per case and one column per backend holding ``"median_ms (ratio x)"``; ``-`` where it could not run."""
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    cases: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[c] for c in case_columns)
        case = cases.setdefault(key, dict(zip(case_columns, key)))
        case[row["backend"]] = f"{row['median_ms']:.3g} ({row[ratio_key]:.2f}x)" if "median_ms" in row else None
    return list(cases.values()), [*case_columns, *backends]


def run(settings: Settings) -> dict:
    """Run every selected case, print the tables and return the JSON payload."""
    info = common.environment(settings.device)
    common.print_header("minser attention benchmark", info)
    notes = []
    if settings.device.type != "cuda":
        notes.append("No CUDA device: the Triton path needs a CUDA GPU and is not timed; PyTorch paths run on CPU "
                     "in float32 only; peak memory is CUDA-only.")
    shapes, pools = list(settings.shapes), []
    if settings.use_models:
        found, found_pools, note = model_shapes(settings.models, settings.model_batch, settings.seed)
        shapes, pools = found + shapes, found_pools
        notes.append(note)
    if settings.lengths:
        shapes += sweep_shapes(settings.lengths, settings.head_dims, settings.tokens, settings.hidden)
        pools += pool_sweep_shapes(settings.lengths, settings.pool_dims, settings.model_batch)
    cases = {"attention": shapes, "pool": pools}
    if not any(cases[op] for op in settings.ops):  # the tables would be empty and the run look like a success
        raise ConfigError(f"nothing to time: no {' or '.join(settings.ops)} case comes from the networks (--models, "
                          "--no-models), the length sweep (--no-sweep) or --shape; drop --no-sweep or --no-models, "
                          "or name other --models")
    for note in notes:
        print(f"note: {note}")
    results = []
    for op, cases, run_case, columns in (
        ("attention", shapes, run_attention, ATTENTION_COLUMNS),
        ("pool", pools, run_pool, POOL_COLUMNS),
    ):
        if op not in settings.ops or not cases:
            continue
        rows = []
        for shape in cases:
            for dtype_name in settings.dtypes:
                for pass_ in settings.passes:
                    rows += run_case(shape, dtype_name, pass_, settings)
        clock = "CUDA events" if settings.device.type == "cuda" else f"{settings.clock} clock"
        print(f"\n### {op}: times in ms (median over {settings.repeat} runs, {clock}), spread = IQR / median in %")
        print(common.format_table(rows, columns, markdown=settings.markdown))
        case_columns, ratio_key, against = SUMMARIES[op]
        print(f"\n### {op} summary: median ms per backend (ratio to {against} in the same run)")
        print(common.format_table(*summarize_cases(rows, case_columns, ratio_key), markdown=settings.markdown))
        results += rows
    return {
        "benchmark": "attention",
        "environment": info,
        "settings": {
            "ops": settings.ops, "dtypes": settings.dtypes, "passes": settings.passes, "lengths": settings.lengths,
            "head_dims": settings.head_dims, "pool_dims": settings.pool_dims, "tokens": settings.tokens,
            "hidden": settings.hidden, "models": settings.models, "model_batch": settings.model_batch,
            "warmup": settings.warmup, "repeat": settings.repeat, "seed": settings.seed, "clock": settings.clock,
        },
        "notes": notes,
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; a bad option value exits with the usage line and status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with common.option_errors(parser):  # run() too: it checks --models before timing anything
        common.check_json(args.json)
        common.apply_threads(args.threads)
        payload = run(resolve_settings(args))
    if args.json:
        common.write_json(args.json, payload)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
