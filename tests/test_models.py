"""Tests of minser.models: every network of Tables 1 and 2, padding invariance, specs, blocks vs PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from minser.errors import ConfigError, DataError
from minser.models import MODELS, build, from_spec
from minser.models.blocks import (
    CNN,
    AttentionPool,
    BiLSTM,
    Fusion,
    PositionalEncoding,
    TransformerEncoderLayer,
    masked_batch_norm,
)
from minser.models.config import option_names

# Every row of the paper's tables: name x option value x positional encoding on/off.
ROWS = [
    ("cnn", {}),
    ("cnn", {"pool": "attention"}),
    *[("cnn_transformer", {"pe": pe}) for pe in (False, True)],
    *[("cnn_lstm_transformer", {"pe": pe}) for pe in (False, True)],
    *[("ilt", {"fusion": f, "pe": pe}) for f in ("concat", "plus", "attention") for pe in (False, True)],
    *[("cat", {"branches": b, "pe": pe}) for b in ("both", "c2l", "l2c") for pe in (False, True)],
    ("cnn_plus_lstm", {}),
    *[("lstm_transformer", {"pe": pe}) for pe in (False, True)],
    ("lstm_transformer", {"pool": "attention", "layers": 1}),
    # Not a row of the paper: the input standardisation option, on the two proposed networks.
    ("ilt", {"fusion": "attention", "input_norm": True}),
    ("cat", {"branches": "both", "input_norm": True}),
]
ROW_IDS = [name + "".join(f"-{k}={v}" for k, v in options.items()) for name, options in ROWS]

# Small widths keep the sweep fast; the structure (3 blocks, strides, both streams) is the paper's.
SMALL = {"n_mels": 16, "d_model": 16, "heads": 2, "ff_dim": 32, "channels": (4, 4, 8), "impl": "torch"}


def small(name: str, n_classes: int = 3, **options) -> nn.Module:
    valid = option_names(MODELS[name].Options)
    return build(name, n_classes, **{**{k: v for k, v in SMALL.items() if k in valid}, **options})


def padded_batch(lengths: list[int], n_mels: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose padding holds large junk, so that any leak shows."""
    x = torch.randn(len(lengths), n_mels, max(lengths))
    for b, length in enumerate(lengths):
        x[b, :, length:] = 1e3
    return x, torch.tensor(lengths)


def test_rows_cover_every_name_and_option_value() -> None:
    assert {name for name, _ in ROWS} == set(MODELS)
    assert {o["fusion"] for n, o in ROWS if n == "ilt"} == {"concat", "plus", "attention"}
    assert {o["branches"] for n, o in ROWS if n == "cat"} == {"both", "c2l", "l2c"}


@pytest.mark.parametrize(("name", "options"), ROWS, ids=ROW_IDS)
def test_every_row_trains(name: str, options: dict) -> None:
    model = small(name, **options).train()
    x, lengths = padded_batch([64, 41, 23])
    logits = model(x, lengths)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets no gradient: a dead block"


@pytest.mark.parametrize(("name", "options"), ROWS, ids=ROW_IDS)
def test_padding_does_not_change_logits(name: str, options: dict) -> None:
    model = small(name, **options).eval()
    x, lengths = padded_batch([70, 52, 33, 16])
    with torch.no_grad():
        batched = model(x, lengths)
        for b, length in enumerate(lengths.tolist()):
            alone = x[b : b + 1, :, :length]
            torch.testing.assert_close(batched[b : b + 1], model(alone), rtol=0, atol=1e-5)
            torch.testing.assert_close(batched[b : b + 1], model(alone, torch.tensor([length])), rtol=0, atol=1e-5)


@pytest.mark.parametrize("junk", [-1e3, float("nan")], ids=["finite", "nan"])  # 0 * NaN is NaN: masks must select
@pytest.mark.parametrize("input_norm", [False, True], ids=["", "input_norm"])
@pytest.mark.parametrize("name", list(MODELS))
def test_padding_does_not_change_training_step(name: str, input_norm: bool, junk: float) -> None:
    """In training mode, more padding changes neither the logits nor BatchNorm's running statistics."""
    models = [small(name, dropout=0.0, input_norm=input_norm).train() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    x, lengths = padded_batch([60, 44, 31])
    more = torch.cat([x, torch.full((3, 16, 25), junk)], dim=2)
    torch.testing.assert_close(models[1](more, lengths), models[0](x, lengths), rtol=0, atol=1e-5)
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=key)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_training_step_under_autocast_keeps_float32_statistics(name: str) -> None:
    """Mixed precision with lengths (the CUDA default with --pad-to batch): the masked BatchNorm raised a dtype
    error updating its float32 running statistics from bfloat16 ones."""
    models = [small(name, dropout=0.0).train() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    x, lengths = padded_batch([60, 44, 31])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = models[1](x, lengths)
    logits.float().sum().backward()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    models[0](x, lengths)  # the same step in float32
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert a.dtype == b.dtype, key
        if key.endswith(("running_mean", "running_var")):  # bf16 convolutions, float32 statistics of them
            torch.testing.assert_close(b, a, rtol=0.05, atol=0.05, msg=key)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_half_precision_network_trains_with_lengths(name: str, dtype: torch.dtype) -> None:
    """A network cast to bfloat16 / float16 (no autocast) has half running buffers: lerping the masked BatchNorm's
    float32 statistics into them raised "expected dtype ... for `end` but got dtype float"."""
    models = [small(name, dropout=0.0).train() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    models[1].to(dtype)
    x, lengths = padded_batch([60, 44, 31])
    logits = models[1](x.to(dtype), lengths)
    logits.float().sum().backward()
    assert logits.dtype == dtype and torch.isfinite(logits.float()).all()
    models[0](x, lengths)
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        if key.endswith(("running_mean", "running_var")):
            assert b.dtype == dtype, key
            torch.testing.assert_close(b.float(), a, rtol=0.05, atol=0.05, msg=key)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(MODELS))
def test_an_empty_batch_gives_empty_logits(name: str, train: bool) -> None:
    """The attention models failed to reshape 0 elements to (0, steps, -1); BatchNorm must not learn from nothing.
    Fewer frames than min_frames were refused as "an utterance of 3 frames" that the empty batch does not have."""
    model = small(name, n_classes=5, input_norm=True).train(train)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for frames in (40, 3, 0):
        for lengths in (None, torch.zeros(0, dtype=torch.long)):
            logits = model(torch.randn(0, 16, frames), lengths)
            assert logits.shape == (0, 5), frames
    for key, value in before.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("shape", [(3, 4, 5, 20), (3, 4, 20)])
def test_masked_batch_norm_is_batch_norm_on_valid_steps(shape: tuple[int, ...]) -> None:
    norm = nn.BatchNorm2d(4) if len(shape) == 4 else nn.BatchNorm1d(4)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    reference = nn.BatchNorm2d(4) if len(shape) == 4 else nn.BatchNorm1d(4)
    reference.load_state_dict(norm.state_dict())
    x = 3 * torch.randn(*shape) - 20
    padded = torch.cat([x, torch.full_like(x, 1e3)], dim=-1)
    got = masked_batch_norm(norm, padded, torch.full((3,), 20))[..., :20]
    torch.testing.assert_close(got, reference(x), rtol=0, atol=1e-5)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(norm.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", list(MODELS))
def test_spec_round_trip(name: str) -> None:
    model = small(name, n_classes=5).eval()
    spec = json.loads(json.dumps(model.spec))
    assert spec["name"] == name and spec["n_classes"] == 5
    assert set(spec["options"]) == set(option_names(MODELS[name].Options))
    rebuilt = from_spec(spec).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.spec == model.spec
    x, lengths = padded_batch([40, 30])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, lengths), model(x, lengths), rtol=0, atol=0)


def test_paper_input_size_with_defaults() -> None:
    """The paper's input (40 Mel bands x 750 frames) through the default CAT and ILT."""
    x, lengths = padded_batch([750, 400], n_mels=40)
    for name in ("cat", "ilt"):
        model = build(name, 4, impl="torch").eval()
        with torch.no_grad():
            logits = model(x, lengths)
            assert logits.shape == (2, 4) and torch.isfinite(logits).all()
            torch.testing.assert_close(logits[1:], model(x[1:, :, :400]), rtol=0, atol=1e-5)
        assert model.cnn(x, lengths)[0].shape == (2, 46, 64)
        assert model.lstm(x, lengths)[0].shape == (2, 187, 64)


def test_unknown_name_lists_the_models() -> None:
    with pytest.raises(ConfigError) as error:
        build("transformer_xl", 4)
    for name in MODELS:
        assert name in str(error.value)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="fusoin") as error:
        build("ilt", 4, fusoin="plus")
    assert "fusion" in str(error.value) and "alpha" in str(error.value)
    with pytest.raises(ConfigError, match="branches"):
        build("cnn", 4, branches="both")


@pytest.mark.parametrize(
    ("name", "options", "listed"),
    [
        ("ilt", {"fusion": "sum"}, "'concat', 'plus', 'attention'"),
        ("cat", {"branches": "c2c"}, "'both', 'c2l', 'l2c'"),
        ("cnn_transformer", {"pool": "max"}, "'mean', 'attention'"),
        ("cnn_transformer", {"impl": "cuda"}, "'auto', 'triton', 'torch'"),
        ("cnn_transformer", {"pe": "yes"}, "True or False"),
        ("cnn_transformer", {"heads": 5}, "multiple of heads"),
        ("ilt", {"alpha": 1.5}, "[0, 1]"),
        ("cnn", {"channels": (8, 16)}, "one entry per block"),
        ("cnn", {"kernel_size": 4}, "odd"),
        ("cnn", {"freq_pools": (4, 4, 4)}, "Mel bands"),
        ("lstm_transformer", {"lstm_stride": 0}, ">= 1"),
        ("cnn", {"input_norm": "yes"}, "true or false"),
    ],
)
def test_bad_option_values(name: str, options: dict, listed: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(name, 4, **options)
    assert listed in str(error.value) and next(iter(options)) in str(error.value)


@pytest.mark.parametrize(("options", "named"), [
    ({"time_pools": (2, 2)}, "time_pools=(2, 2) is invalid: it has 2"),
    ({"channels": (4, 4, 4, 4)}, "channels=(4, 4, 4, 4) is invalid: it has 4"),
])
def test_a_per_block_option_of_another_length_is_named(options: dict, named: str) -> None:
    """The option of the odd length is the one named, with the length the others share."""
    with pytest.raises(ConfigError) as error:
        build("cnn", 4, **options)
    others = ", ".join(n for n in ("channels", "freq_strides", "time_strides", "freq_pools", "time_pools")
                       if n not in options)
    assert str(error.value) == (f"option {named} entries and {others} 3; channels, freq_strides, time_strides, "
                                "freq_pools, time_pools need one entry per block each")


def test_bad_spec_and_n_classes() -> None:
    with pytest.raises(ConfigError, match="name, n_classes, options"):
        from_spec({"name": "cat"})
    with pytest.raises(ConfigError, match="n_classes"):
        build("cat", 1)


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "ilt", "n_classes": 4, "options": None}, "a model spec's options are a dict of option names to values "
     "({} for the defaults); got options=None"),
    ({"name": "ilt", "n_classes": 4, "options": {1: 2}}, "a model spec's options are a dict of option names to "
     "values ({} for the defaults); got options={1: 2}"),
    ({"name": ["ilt"], "n_classes": 4, "options": {}}, "a model spec's name is a string, one of cnn, cnn_transformer, "
     "cnn_lstm_transformer, ilt, cat, cnn_plus_lstm, lstm_transformer; got name=['ilt']"),
])
def test_a_spec_of_bad_field_types_is_refused(spec: dict, message: str) -> None:
    """These raised raw TypeErrors: "argument after ** must be a mapping", "keywords must be strings", "unhashable"."""
    with pytest.raises(ConfigError) as error:
        from_spec(spec)
    assert str(error.value) == message


def test_alpha_without_fusion_plus_is_refused() -> None:
    """alpha=0.9 with attention fusion was recorded in the spec and ignored (trainable weights were used)."""
    for fusion in ("attention", "concat"):
        with pytest.raises(ConfigError) as error:
            build("ilt", 4, fusion=fusion, alpha=0.9)
        assert str(error.value) == (f"option alpha=0.9 is invalid: only fusion='plus' (alpha * L + (1 - alpha) * T) "
                                    f"uses alpha, and fusion is {fusion!r}; give fusion='plus' or drop alpha")
    spec = json.loads(json.dumps(build("ilt", 4, fusion="concat").spec))  # a spec stores the default alpha: loads
    assert spec["options"]["alpha"] == 0.5 and from_spec(spec).spec == spec
    assert build("ilt", 4, fusion="plus", alpha=0.9).fusion_weights()["lstm"] == 0.9
    # A spec an earlier version wrote with an ignored alpha still rebuilds, to the same network (alpha unused).
    old = {**spec, "options": {**spec["options"], "alpha": 0.3}}
    assert from_spec(old).spec == spec
    with pytest.raises(ConfigError, match=r"option alpha=2\.0 is invalid: give a number in \[0, 1\]"):
        from_spec({**old, "options": {**old["options"], "fusion": "plus", "alpha": 2.0}})  # plus still checks it


@pytest.mark.parametrize(("name", "options", "message"), [
    ("cnn_transformer", {"heads": 3}, "give an even width (sin/cos pairs of the positional encoding; or pe=False)"),
    ("ilt", {"heads": 3, "pe": False}, "give an even width (two LSTM directions of d_model / 2 units)"),
    ("cnn_plus_lstm", {}, "give an even width (two LSTM directions of d_model / 2 units)"),
])
def test_an_odd_d_model_is_refused_only_where_it_is_split_in_two(name: str, options: dict, message: str) -> None:
    """Every network refused an odd width, giving the reasons of the BiLSTM and the positional encoding."""
    with pytest.raises(ConfigError) as error:
        small(name, d_model=15, **options)
    assert str(error.value) == f"option d_model=15 is invalid: {message}"
    x, lengths = padded_batch([40, 30])
    for name, options in (("cnn", {}), ("cnn", {"pool": "attention"}), ("cnn_transformer", {"heads": 3, "pe": False})):
        logits = small(name, d_model=15, **options).train()(x, lengths)
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_features_of_another_dtype_than_the_network_are_refused(dtype: torch.dtype) -> None:
    """float64 features (numpy's) crashed in the first convolution: "expected scalar type Double but found Float"."""
    model = small("ilt")
    x, lengths = padded_batch([40, 30])
    with pytest.raises(DataError) as error:
        model(x.to(dtype), lengths)
    assert str(error.value) == (f"ilt got features of dtype {dtype}, but its parameters are torch.float32; convert the "
                                "features with features.to(torch.float32) (torch.from_numpy keeps a float64 array "
                                "float64)")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts float features (not float64) itself
        with pytest.raises(DataError, match=f"dtype {dtype}"):
            model(x.to(dtype), lengths)
        assert model(x.half(), lengths).dtype == torch.bfloat16
    assert model.double()(x.double(), lengths).dtype == torch.float64
    # Mixed precision: bf16 layers, BatchNorms (the input's first of all) kept in float32, fed bf16 features.
    mixed = build("cnn", 4, n_mels=16, d_model=8, channels=[2, 2, 2], input_norm=True).eval()
    for module in mixed.modules():
        if not any(module.children()) and not isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.to(torch.bfloat16)
    assert next(mixed.parameters()).dtype == torch.float32  # input_norm's weight
    assert mixed(x.to(torch.bfloat16), lengths).shape == (2, 4)
    with pytest.raises(DataError, match=r"got features of dtype torch\.float32, but its parameters are torch\.bfloat16"):
        mixed(x, lengths)  # float32 features reached the bf16 convolution: a RuntimeError from torch
    with pytest.raises(DataError, match=r"parameters are torch\.bfloat16; convert the features with "
                                        r"features\.to\(torch\.bfloat16\)"):
        mixed(x.double(), lengths)  # the dtype most weights hold


def test_one_step_of_one_utterance_in_training_without_lengths_is_refused_with_the_fix() -> None:
    """BatchNorm's batch statistics need two values per channel: one utterance of min_frames raised PyTorch's
    "Expected more than 1 value per channel when training" from deep inside the network."""
    model = small("lstm_transformer").train()
    assert model.min_frames == 4  # FrameConv: 4 frames -> 1 step
    with pytest.raises(DataError) as error:
        model(torch.randn(1, 16, 4))
    assert str(error.value) == ("BatchNorm1d in training mode got one value per channel (its input is (1, 16, 1): one "
                                "utterance of one step), too few for batch statistics; pass the features' lengths "
                                "(model(features, lengths)), or train on more frames or a larger batch")
    for x, lengths in ((torch.randn(1, 16, 4), torch.tensor([4])), (torch.randn(2, 16, 4), None),
                       (torch.randn(1, 16, 8), None)):
        assert model(x, lengths).shape == (len(x), 3)
    assert model.eval()(torch.randn(1, 16, 4)).shape == (1, 3)


def test_short_or_misshaped_input_is_refused() -> None:
    model = small("cat")
    assert model.min_frames == 15  # ceil(15 / 2) = 8 -> 4 -> 2 -> 1 CNN step
    with pytest.raises(DataError, match="minimum of 15"):
        model(torch.randn(1, 16, 14))
    with pytest.raises(DataError, match=r"\(batch, 16, frames\)"):
        model(torch.randn(2, 40, 40))
    with pytest.raises(DataError, match=r"values in \[0, 40\] frames, got \[41, 30\]"):
        model(torch.randn(2, 16, 40), torch.tensor([41, 30]))


def test_a_short_length_is_told_to_grow_not_the_features() -> None:
    """With lengths, the advice was to pad features that were long enough already; a negative length got it too."""
    model = small("cat")
    start = "cat got an utterance of 10 frames, fewer than its minimum of 15 (each branch must keep one step); "
    with pytest.raises(DataError) as error:
        model(torch.randn(2, 16, 40), torch.tensor([40, 10]))
    assert str(error.value) == start + "raise those lengths to at least 15 (lengths.clamp(min=15), as Recognizer does)"
    with pytest.raises(DataError) as error:
        model(torch.randn(2, 16, 10), torch.tensor([10, 10]))
    assert str(error.value) == start + ("raise those lengths to at least 15 (lengths.clamp(min=15), as Recognizer "
                                        "does) and pad the features to at least 15 frames")
    with pytest.raises(DataError) as error:
        model(torch.randn(2, 16, 10))
    assert str(error.value) == start + "pad the features to at least that many frames"
    with pytest.raises(DataError) as error:
        model(torch.randn(2, 16, 40), torch.tensor([40, -1]))
    assert str(error.value) == "lengths must be (2,) values in [0, 40] frames, got [40, -1]"


@pytest.mark.parametrize(("lengths", "got"), [
    ([40, 30], "list"),
    (np.array([40, 30]), "ndarray"),
    (torch.tensor([], dtype=torch.long), "(0,) torch.int64"),
    (torch.tensor([40, 30], dtype=torch.complex64), "(2,) torch.complex64"),
    (torch.tensor([40.0, 30.0]), "(2,) torch.float32"),
    (torch.tensor([True, True]), "(2,) torch.bool"),
    (torch.tensor([40, 30, 10]), "(3,) torch.int64"),  # its 10 used to be reported as too short
])
def test_lengths_that_are_not_an_integer_tensor_of_the_batch_are_refused_first(lengths, got: str) -> None:
    """A list, an array, an empty or complex tensor reached lengths.dtype or lengths.min() and raised raw errors."""
    with pytest.raises(ConfigError) as error:
        small("cat")(torch.randn(2, 16, 40), lengths)
    assert str(error.value) == f"lengths must be an integer tensor of shape (2,), got {got}"


@pytest.mark.parametrize(("name", "options", "message"), [
    ("ilt", {"heads": 8}, "option heads=8 is invalid: impl='triton' runs attention through the fused kernels, which "
     "take head sizes (d_model / heads) 16, 32, 64, 128, and d_model=64 / heads=8 is 8; give heads=1 or 2 or 4, "
     "or impl='auto' or 'torch'"),
    ("cat", {"d_model": 40, "heads": 2}, "option heads=2 is invalid: impl='triton' runs attention through the fused "
     "kernels, which take head sizes (d_model / heads) 16, 32, 64, 128, and d_model=40 / heads=2 is 20; give d_model "
     "a multiple of one of them, or impl='auto' or 'torch'"),
    ("cnn", {"d_model": 2048, "pool": "attention"}, "option d_model=2048 is invalid: impl='triton' runs "
     "pool='attention' through the fused kernel, which takes feature sizes up to 1024; give d_model <= 1024, "
     "or impl='auto' or 'torch'"),
    ("cnn_plus_lstm", {"d_model": 2048}, "option d_model=2048 is invalid: impl='triton' runs the LSTM branch's "
     "attention pooling through the fused kernel, which takes feature sizes up to 1024; give d_model <= 1024, "
     "or impl='auto' or 'torch'"),
])
def test_triton_refuses_sizes_its_kernels_lack_at_build_and_set_impl(name: str, options: dict, message: str) -> None:
    """These were accepted, and failed at the first forward, once the data was loaded."""
    with pytest.raises(ConfigError) as error:
        build(name, 4, impl="triton", **options)
    assert str(error.value) == message
    model = build(name, 4, **options)  # "auto" takes the PyTorch path for them
    with pytest.raises(ConfigError) as error:
        model.set_impl("triton")
    assert str(error.value) == message
    assert model.options.impl == "auto" and all(m.impl == "auto" for m in model.modules() if hasattr(m, "impl"))
    assert build(name, 4, impl="triton").options.impl == "triton"  # the defaults fit


def test_ilt_fusion_weights() -> None:
    model = small("ilt", fusion="attention")
    assert model.fusion_weights() == pytest.approx({"lstm": 0.5, "transformer": 0.5})
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    x, lengths = padded_batch([40, 30])
    nn.functional.cross_entropy(model(x, lengths), torch.tensor([0, 1])).backward()
    optimizer.step()
    weights = model.fusion_weights()
    assert weights["lstm"] != pytest.approx(0.5) and sum(weights.values()) == pytest.approx(1.0)
    # Exactly: results.json recorded float32's 0.6499999761581421 and 0.3499999940395355.
    assert small("ilt", fusion="plus", alpha=0.65).fusion_weights() == {"lstm": 0.65, "transformer": 0.35}
    with pytest.raises(ConfigError, match="concat"):
        small("ilt", fusion="concat").fusion_weights()


def test_attention_fusion_weighs_each_branch_by_its_own_score() -> None:
    """a_L = softmax(s)[0] weighs the LSTM vector and names it "lstm": swapping the pair passed every test."""
    fusion = Fusion("attention", alpha=0.5)
    with torch.no_grad():
        fusion.scores.copy_(torch.tensor([1.0, -1.0]))  # the LSTM's score first
    a_lstm = float(torch.sigmoid(torch.tensor(2.0)))  # softmax of (1, -1)
    lstm, transformer = torch.ones(1, 3), torch.zeros(1, 3)
    torch.testing.assert_close(fusion(lstm, transformer), torch.full((1, 3), a_lstm))
    assert float(fusion.weights()[0].detach()) == pytest.approx(a_lstm)
    plus = Fusion("plus", alpha=0.65)
    torch.testing.assert_close(plus(lstm, transformer), torch.full((1, 3), 0.65))


def test_cnn_output_lengths_match_its_tensors() -> None:
    cnn = CNN(16, (2, 2, 2), ((2, 2), (1, 1), (1, 3)), ((1, 2), (2, 1), (1, 2)), 3, 8, 0.0)
    for frames in range(20, 80):
        out, lengths = cnn(torch.randn(1, 16, frames), torch.tensor([frames]))
        assert out.shape[1] == lengths.item() == cnn.output_lengths(frames), frames


def test_positional_encoding_is_equations_3_and_4() -> None:
    d_model = 8
    table = PositionalEncoding(d_model)(torch.zeros(1, 300, d_model))[0]
    for pos in (0, 7, 299):
        for i in range(d_model // 2):
            angle = torch.tensor(pos / 10000 ** (2 * i / d_model), dtype=torch.float64)
            assert table[pos, 2 * i].item() == pytest.approx(torch.sin(angle).item(), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(torch.cos(angle).item(), abs=1e-5)
    longer = PositionalEncoding(d_model, max_len=4)(torch.zeros(1, 300, d_model))[0]
    torch.testing.assert_close(longer, table)


def test_bilstm_equals_packed_bidirectional_lstm() -> None:
    ours = BiLSTM(6, 10, layers=2)
    reference = nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for layer in range(2):
            for direction, lstm in (("", ours.forwards[layer]), ("_reverse", ours.backwards[layer])):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(reference, f"{kind}_l{layer}{direction}").copy_(getattr(lstm, f"{kind}_l0"))
    x, lengths = torch.randn(3, 12, 6), torch.tensor([12, 7, 3])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected = pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=12)[0]
    torch.testing.assert_close(ours(x, lengths), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours(x), reference(x)[0], rtol=0, atol=1e-6)


def test_transformer_layer_equals_pytorch_layer() -> None:
    ours = TransformerEncoderLayer(16, 4, 32, dropout=0.0, impl="torch").eval()
    reference = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(torch.cat([ours.attention.query.weight, ours.attention.key_value.weight]))
        reference.self_attn.in_proj_bias.copy_(torch.cat([ours.attention.query.bias, ours.attention.key_value.bias]))
        reference.self_attn.out_proj.load_state_dict(ours.attention.out.state_dict())
        reference.linear1.load_state_dict(ours.feed_forward[0].state_dict())
        reference.linear2.load_state_dict(ours.feed_forward[2].state_dict())
        reference.norm1.load_state_dict(ours.norm_attention.state_dict())
        reference.norm2.load_state_dict(ours.norm_feed_forward.state_dict())
        x, lengths = torch.randn(3, 9, 16), torch.tensor([9, 5, 2])
        padding = torch.arange(9)[None, :] >= lengths[:, None]
        expected = reference(x, src_key_padding_mask=padding)
        got = ours(x, memory_lengths=lengths)
    valid = ~padding
    torch.testing.assert_close(got[valid], expected[valid], rtol=0, atol=1e-5)


def test_attention_pool_weights_ignore_padding() -> None:
    pool = AttentionPool(8, impl="torch")
    h, lengths = torch.randn(2, 6, 8), torch.tensor([6, 3])
    pooled, weights = pool(h, lengths, return_weights=True)
    assert weights[1, 3:].abs().max() == 0
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(pooled[1], (weights[1, :3, None] * h[1, :3]).sum(dim=0))
    torch.testing.assert_close(pool(h, lengths), pooled, rtol=0, atol=0)
    assert not hasattr(pool, "weights")  # nothing of a call is kept on the module


@pytest.mark.parametrize("name", ["ilt", "cat"])
def test_triton_path_trains_like_torch(name: str) -> None:
    """The same weights through impl="triton" (Triton's CPU interpreter here) and impl="torch"."""
    pytest.importorskip("triton")
    model = small(name, d_model=32, heads=2, channels=(2, 2, 2))  # the kernels take head sizes >= 16
    x, lengths = padded_batch([40, 25])
    grads = {}
    for impl in ("torch", "triton"):
        model.set_impl(impl)
        assert model.spec["options"]["impl"] == impl
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        logits = model(x, lengths)
        nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
        grads[impl] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(grads["triton"][0], grads["torch"][0], rtol=1e-4, atol=1e-5)
    for pname, grad in grads["torch"][1].items():
        torch.testing.assert_close(grads["triton"][1][pname], grad, rtol=1e-3, atol=1e-5, msg=pname)


def test_input_norm_standardises_each_band_over_valid_frames() -> None:
    model = small("cnn", input_norm=True).train()
    x, lengths = padded_batch([64, 41, 23])
    x = x * torch.linspace(1, 20, 16)[None, :, None] - 60  # bands of very different scale, in dB
    captured = {}
    model.cnn.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0]))
    model(x, lengths)
    valid = torch.cat([captured["x"][b, :, :n] for b, n in enumerate(lengths.tolist())], dim=1)
    torch.testing.assert_close(valid.mean(1), torch.zeros(16), rtol=0, atol=1e-4)
    torch.testing.assert_close(valid.std(1, unbiased=False), torch.ones(16), rtol=0, atol=1e-3)
    assert "input_norm.running_mean" in model.state_dict()
    assert not any(k.startswith("input_norm") for k in small("cnn").state_dict())  # off: keys unchanged


def test_masked_batch_norm_trains_in_float64_and_passes_gradcheck() -> None:
    """Its statistics were float32 whatever the input: a float64 network failed its first training step
    with lengths (a float32 mean lerped into float64 buffers), so gradcheck could not reach it either."""
    norm = nn.BatchNorm1d(3).double().train()
    x, lengths = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True), torch.tensor([6, 4])
    assert masked_batch_norm(norm, x, lengths).dtype == torch.float64
    assert norm.running_mean.dtype == torch.float64
    norm.momentum = 0.0  # the running statistics then stay put while gradcheck calls it again and again
    assert torch.autograd.gradcheck(lambda t: masked_batch_norm(norm, t, lengths), (x,))
    model = small("cnn").double().train()
    x, lengths = padded_batch([100, 60])
    model(x.double(), lengths).sum().backward()
