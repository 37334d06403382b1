"""ecg_exps.models: shapes, parameter counts, the time-indexed position encoding (the
original's batch-indexed one is the bug fixed), seeding, Hessian-vector products and the
sharpness measurements on both models, option errors, and that the models can learn."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from common.sharpness import hessian_eigenvalues, hessian_trace, measuring
from common.sharpness.core import differentiable_attention
from common.sharpness.hvp import HessianOperator
from ecg_exps.models import (
    MODELS,
    AttentionModel,
    Cnn1d,
    ModelError,
    TimePositionEncoding,
    build_ecg_model,
    cnn1d_steps,
    min_cnn1d_length,
)

ATTENTION_PARAMS = 19_528_109  # d_model 200, 2 heads, FFN 128, 1 layer, 512-256-128, L 187
SMALL = {"d_model": 16, "heads": 2, "ffn": 32, "hidden": (32,)}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ce(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def signals(n: int, length: int = 187, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, length, generator=g, dtype=torch.float64).to(dtype)
    return x, torch.randint(0, 5, (n,), generator=g)


def build(name: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_ecg_model(name, **kw)


@pytest.fixture(scope="module")
def default_attention() -> nn.Module:
    return build("attention")


# --------------------------------------------------------------------------- shapes, sizes


def test_every_model_is_tested():
    assert MODELS == ("attention", "cnn1d")
    assert isinstance(build_ecg_model("Attention ", **SMALL), AttentionModel)
    assert isinstance(build_ecg_model("CNN1D"), Cnn1d)


@pytest.mark.parametrize("batch", [3, 1])
def test_output_shapes_at_the_defaults(default_attention, batch):
    x, _ = signals(batch)
    for model in (default_attention, build("cnn1d")):
        model.eval()
        with torch.no_grad():
            assert model(x).shape == (batch, 5)
        model.train()
        out = model(x)  # train mode, with a graph (dropout active in the attention model)
        assert out.shape == (batch, 5) and out.requires_grad
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("length", [125, 300])
def test_other_lengths_and_class_counts(name, length):
    model = build(name, num_classes=2, length=length, **SMALL)
    with torch.no_grad():
        assert model(signals(3, length)[0]).shape == (3, 2)


def test_attention_parameter_count(default_attention):
    count = n_params(default_attention)
    print(f"attention parameters at the defaults: {count:,}")
    assert count == ATTENTION_PARAMS
    assert 19.3e6 <= count <= 19.7e6

    def formula(c: int, length: int, d: int, ffn: int, layers: int, hidden: tuple[int, ...]):
        layer = 4 * (d * d + d) + (d * ffn + ffn) + (ffn * d + d) + 2 * 2 * d
        widths = [length * d, *hidden, c]
        head = sum(a * b + b for a, b in itertools.pairwise(widths))
        return 2 * d + layers * layer + 2 * d + head

    assert count == formula(5, 187, 200, 128, 1, (512, 256, 128))
    small = build("attention", num_classes=3, length=50, layers=2, **SMALL)
    assert n_params(small) == formula(3, 50, 16, 32, 2, (32,))
    assert n_params(build("attention", length=50, d_model=8, heads=1, hidden=())) == formula(
        5, 50, 8, 128, 1, ()
    )


@pytest.mark.parametrize("length, classes", [(187, 5), (125, 2), (300, 4)])
def test_cnn1d_parameter_count(length, classes):
    steps = length
    for _ in range(5):
        steps = (steps - 5) // 2 + 1
    conv = 32 * 32 * 5 + 32
    expected = (
        (1 * 32 * 5 + 32) + 5 * 2 * conv + (32 * steps * 32 + 32) + (32 * 32 + 32) + 32 * classes
    ) + classes
    model = build("cnn1d", num_classes=classes, length=length)
    assert cnn1d_steps(length) == steps
    assert n_params(model) == expected
    if (length, classes) == (187, 5):
        assert steps == 2 and expected == 55_013


def test_cnn1d_is_kachuees_architecture():
    model = build("cnn1d")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert len(convs) == 11
    assert all(c.kernel_size == (5,) and c.padding == (2,) and c.out_channels == 32 for c in convs)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool1d)]
    assert len(pools) == 5 and all(p.kernel_size == 5 and p.stride == 2 for p in pools)
    kinds = {type(m) for m in model.modules()}
    assert nn.Dropout not in kinds and not any("Norm" in k.__name__ for k in kinds)
    assert min_cnn1d_length() == 125 and cnn1d_steps(124) == 0
    # residual: with the block's convolutions zeroed, a block is ReLU then max-pool
    block = model.blocks[0]
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        h = torch.randn(2, 32, 40)
        torch.testing.assert_close(block(h), nn.functional.max_pool1d(h.relu(), 5, 2))


# --------------------------------------------------------------------------- position encoding


def test_position_encoding_is_indexed_by_time_not_by_batch():
    d, length = 16, 187
    position = TimePositionEncoding(d, length)
    one = position(torch.zeros(1, length, d))
    many = position(torch.zeros(7, length, d))
    # identical across the batch, and the same whatever the batch size
    torch.testing.assert_close(many, one.expand(7, -1, -1), rtol=0, atol=0)
    pe = one[0]
    # different at every time step (no two rows equal), the same at every sample
    assert torch.cdist(pe, pe).add(torch.eye(length)).min() > 1e-3
    # Vaswani et al.: pe[t, 2i] = sin(t / 10000^(2i/d)), pe[t, 2i+1] = cos(...)
    t = torch.arange(length, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    torch.testing.assert_close(pe[:, 0::2].double(), torch.sin(t * freq), rtol=0, atol=1e-6)
    torch.testing.assert_close(pe[:, 1::2].double(), torch.cos(t * freq), rtol=0, atol=1e-6)
    assert torch.equal(pe[0, 0::2], torch.zeros(d // 2)) and torch.equal(pe[0, 1::2], torch.ones(8))
    # shorter inputs get the first steps; the encoding is a buffer outside the state dict
    torch.testing.assert_close(position(torch.zeros(2, 10, d))[1], pe[:10])
    assert "pe" in dict(position.named_buffers()) and "pe" not in position.state_dict()
    # odd widths work too (the sine takes the extra column)
    assert TimePositionEncoding(5, 4).pe.shape == (4, 5)

    # the original's forward on a batch-first tensor: pe[:x.size(0)] of shape (B, 1, d)
    original_pe = pe[:, None, :]  # its buffer layout: (max_len, 1, d)
    x = torch.zeros(7, length, d)
    buggy = x + original_pe[: x.size(0)]
    assert torch.equal(buggy, buggy[:, :1].expand_as(buggy))  # constant over time ...
    assert not torch.equal(buggy[0], buggy[1])  # ... and different for each batch slot


def test_attention_sees_the_order_of_time_steps():
    """Self-attention without a position signal is equivariant to permuting time (what the
    original's encoder computes); with the time encoding it is not."""
    model = build("attention", dropout=0.0, layers=2, **SMALL).eval()
    x, _ = signals(3)
    perm = torch.randperm(187, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        enc, enc_perm = model.encode(x), model.encode(x[..., perm])
        assert (enc_perm - enc[:, perm]).abs().max() > 1e-2
        model.position.pe.zero_()  # the encoder alone: equivariant
        torch.testing.assert_close(model.encode(x[..., perm]), model.encode(x)[:, perm])


def test_a_samples_output_does_not_depend_on_its_batch():
    """The original added an offset chosen by the sample's index in its batch."""
    model = build("attention", **SMALL).eval()
    x, _ = signals(5)
    with torch.no_grad():
        whole = model(x)
        for i in range(5):
            torch.testing.assert_close(model(x[i : i + 1])[0], whole[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(x.flip(0)), whole.flip(0), rtol=1e-5, atol=1e-6)


def test_attention_layers_are_post_ln_relu_with_the_originals_dropout():
    model = build("attention", layers=2, dropout=0.2, **SMALL)
    layers = list(model.encoder)
    assert len(layers) == 2
    for layer in layers:
        assert isinstance(layer, nn.TransformerEncoderLayer)
        assert not layer.norm_first and layer.self_attn.batch_first
        assert layer.activation_relu_or_gelu == 1  # ReLU
        assert layer.self_attn.dropout == 0.0  # no dropout on attention weights
        assert layer.dropout.p == layer.dropout1.p == layer.dropout2.p == 0.2
    assert model.dropout.p == 0.2
    # independently initialised layers (nn.TransformerEncoder would deep-copy one)
    assert not torch.equal(layers[0].linear1.weight, layers[1].linear1.weight)
    assert isinstance(model.norm, nn.LayerNorm) and model.norm.normalized_shape == (16,)
    head = [type(m) for m in model.head]
    assert head == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]  # no dropout in the head
    # dropout 0: train mode computes the eval-mode function
    model = build("attention", dropout=0.0, **SMALL)
    x, _ = signals(4)
    with torch.no_grad():
        torch.testing.assert_close(model.train()(x), model.eval()(x), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("name", MODELS)
def test_the_same_seed_gives_the_same_weights(name):
    kw = SMALL if name == "attention" else {}
    a, b, c = build(name, 3, **kw), build(name, 3, **kw), build(name, 4, **kw)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# --------------------------------------------------------------------------- sharpness


def _finite_difference_hvp(model, batch, params, v: list[torch.Tensor], eps: float):
    def grads() -> list[torch.Tensor]:
        with torch.enable_grad(), differentiable_attention():
            return list(torch.autograd.grad(ce(model, batch), params))

    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.add_(d, alpha=eps)
    plus = grads()
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.sub_(d, alpha=2 * eps)
    minus = grads()
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.add_(d, alpha=eps)
    return torch.cat([(a - b).reshape(-1) for a, b in zip(plus, minus, strict=True)]) / (2 * eps)


@pytest.mark.parametrize("name", MODELS)
def test_hessian_vector_products_match_finite_differences(name):
    """float64; eps small enough that no ReLU or max-pool switches between w ± eps·v."""
    kw = {**SMALL, "layers": 2} if name == "attention" else {}
    model = build(name, **kw).double().eval()  # eval: dropout off, as in the measurements
    batch = signals(6, dtype=torch.float64)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(5)
    flat = torch.randn(sum(p.numel() for p in params), generator=g, dtype=torch.float64)
    flat /= flat.norm()
    with measuring(model):
        hv = HessianOperator(model, ce, [(batch, 6)], params).matvec(flat)
    parts = [
        part.reshape(p.shape)
        for part, p in zip(torch.split(flat, [p.numel() for p in params]), params, strict=True)
    ]
    fd = _finite_difference_hvp(model, batch, params, parts, eps=1e-6)
    rel = float((hv - fd).norm() / hv.norm())
    print(f"{name}: relative error {rel:.2e}")
    assert hv.norm() > 0 and rel < 1e-3, rel


@pytest.mark.parametrize("name", MODELS)
def test_trace_and_top_eigenvalue_run(name):
    kw = SMALL if name == "attention" else {}
    model = build(name, **kw)
    model.train()
    batch = signals(8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace = hessian_trace(model, ce, [batch], n_probes=4, seed=0, progress=False)
    top = hessian_eigenvalues(model, ce, [batch], k=1, tol=1e-3, max_iter=30, progress=False)
    assert trace.n_probes == 4 and trace.n_examples == 8
    assert math.isfinite(trace.total) and math.isfinite(trace.stderr)
    lam = top.eigenvalues[0]
    assert math.isfinite(lam) and lam > 0
    # each Hutchinson sample is P times a Rayleigh quotient v'Hv / v'v: at most lambda_max
    p = n_params(model)
    assert max(trace.samples) / p <= lam * (1 + 1e-6)
    assert model.training  # the measurements leave the model as they found it
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- errors


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ModelError) as e:
        build_ecg_model("atention")
    message = _one_line(e)
    assert "Did you mean 'attention'?" in message and "Known: attention, cnn1d." in message
    with pytest.raises(ModelError) as e:
        build_ecg_model("resnet18")
    assert "Did you mean" not in _one_line(e) and "attention, cnn1d" in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "name, kw, words",
    [
        ("attention", {"d_model": 10, "heads": 3}, "divisible by heads"),
        ("attention", {"heads": 0}, "heads must be an integer >= 1"),
        ("attention", {"d_model": 2.5}, "d_model must be"),
        ("attention", {"layers": 0}, "layers must be"),
        ("attention", {"ffn": True}, "ffn must be"),
        ("attention", {"hidden": (32, 0)}, "hidden[1] must be"),
        ("attention", {"hidden": "512"}, "hidden must be a sequence"),
        ("attention", {"num_classes": 0}, "num_classes must be"),
        ("attention", {"length": 0}, "length must be"),
        ("cnn1d", {"length": 124}, "at least 125 steps"),
        ("cnn1d", {"dropout": 1.0}, "dropout must be a number in [0, 1)"),
        ("attention", {"dropout": -0.1}, "dropout must be"),
    ],
)
def test_bad_options_are_one_line_model_errors(name, kw, words):
    with pytest.raises(ModelError) as e:
        build_ecg_model(name, **kw)
    assert words in _one_line(e)


@pytest.mark.parametrize("name", MODELS)
def test_wrong_input_shapes_are_one_line_errors(name):
    model = build(name, **(SMALL if name == "attention" else {}))
    for shape in [(2, 187), (2, 187, 1), (2, 1, 150)]:
        with pytest.raises(ModelError) as e:
            model(torch.zeros(shape))
        assert "(batch, 1, 187)" in _one_line(e)


# --------------------------------------------------------------------------- learning


def toy_waves(n: int, length: int, seed: int = 0):
    """Class 0: sine waves, class 1: square waves; random frequency and phase."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    freq = 2 * math.pi * (2 + 3 * torch.rand(n, 1, generator=g)) / length
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    wave = torch.sin(freq * t + phase)
    y = torch.arange(n) % 2
    x = torch.where(y[:, None] == 1, torch.sign(wave), wave)
    return x.unsqueeze(1), y


@pytest.mark.parametrize("name", MODELS)
def test_a_small_model_learns_sine_from_square_waves(name):
    length = 64 if name == "attention" else 128  # short signals: seconds on a shared CPU
    kw = SMALL if name == "attention" else {}
    model = build(name, num_classes=2, length=length, **kw).train()
    x, y = toy_waves(16, length)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = ce(model, (x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        final = ce(model, (x, y)).item()
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert final < 0.5 * losses[0], (losses[0], final)
    assert accuracy == 1.0
