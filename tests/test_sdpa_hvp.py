"""Hessian-vector products through attention: fused SDPA kernels have no double backward.

On CPU ``F.scaled_dot_product_attention`` runs the fused flash kernel (also in float64),
whose backward autograd cannot differentiate; ``measuring`` (and ``HessianOperator``)
route attention through the math backend. Exact Hessians here come from
``torch.autograd.functional.hessian`` under the math backend.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert_config
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from common.sharpness import hessian_eigenvalues, hessian_trace, measuring, noise_stability
from common.sharpness.core import differentiable_attention
from common.sharpness.hvp import HessianOperator

FUSED_ERROR = "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward"


class SDPAClassifier(nn.Module):
    """One self-attention layer calling F.scaled_dot_product_attention, mean-pooled."""

    def __init__(self, d: int = 4, heads: int = 2, classes: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if pad is None else ~pad[:, None, None, :]  # (B, 1, 1, T): True attends
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        return self.head(y.transpose(1, 2).reshape(b, t, d).mean(1))


class EncoderClassifier(nn.Module):
    """nn.TransformerEncoder of one nn.TransformerEncoderLayer (batch_first), mean-pooled
    over every position, padded ones included."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 2, 8, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1)  # eval fast path: nested tensors
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(x, src_key_padding_mask=pad).mean(1))


def ce(model, batch):
    x, pad, y = batch
    return nn.functional.cross_entropy(model(x, pad), y)


def make(cls, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls().double()


def batch(n: int = 6, t: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, 4, generator=g, dtype=torch.float64)
    pad = torch.zeros(n, t, dtype=torch.bool)
    pad[0, 3:] = True  # one padded sequence: the mask paths run too
    return x, pad, torch.randint(0, 2, (n,), generator=g)


def exact_hessian(model: nn.Module, data) -> torch.Tensor:
    """H of ce(model, data) w.r.t. all parameters (named order), under the math backend."""
    named = list(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(vec):
        params, i = {}, 0
        for name, p in named:
            params[name] = vec[i : i + p.numel()].reshape(p.shape)
            i += p.numel()
        return ce(lambda x, pad: functional_call(model, params, (x, pad)), data)

    model.eval()
    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.functional.hessian(f, flat)


def plain_hvp(model: nn.Module, loss_fn, data, vector: torch.Tensor) -> torch.Tensor:
    """H·v by a double backward with whatever backend is current (no library code)."""
    params = list(model.parameters())
    grads = torch.autograd.grad(loss_fn(model, data), params, create_graph=True)
    parts = torch.split(vector, [p.numel() for p in params])
    vs = [part.reshape(p.shape).to(p.dtype) for part, p in zip(parts, params, strict=True)]
    hv = torch.autograd.grad(grads, params, grad_outputs=vs)
    return torch.cat([h.reshape(-1) for h in hv]).double()


@pytest.mark.parametrize("cls", [SDPAClassifier, EncoderClassifier])
def test_a_plain_double_backward_fails_on_the_fused_kernel(cls):
    """What the library works around (torch 2.14 CPU): eval and training mode alike."""
    model, data = make(cls), batch()
    v = torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    for training in (True, False):
        model.train(training)
        with pytest.raises(RuntimeError, match=FUSED_ERROR):
            plain_hvp(model, ce, data, v)
        with sdpa_kernel(SDPBackend.MATH):
            assert torch.isfinite(plain_hvp(model, ce, data, v)).all()


@pytest.mark.parametrize("cls", [SDPAClassifier, EncoderClassifier])
@pytest.mark.parametrize("batched", [False, True])  # True: the GPU path (vmapped products)
def test_products_are_the_exact_hessian(cls, batched):
    model, data = make(cls), batch()
    h = exact_hessian(model, data)
    params = list(model.parameters())
    eye = torch.eye(h.shape[0], dtype=torch.float64)
    with measuring(model):
        op = HessianOperator(model, ce, [(data, 6)], params, batched=batched)
        torch.testing.assert_close(op.matmat(eye), h, rtol=1e-9, atol=1e-11)
    # the operator also works outside measuring (it builds its graphs under the math backend)
    model.eval()
    standalone = HessianOperator(model, ce, [(data, 6)], params).matmat(eye[:3])
    torch.testing.assert_close(standalone, h[:3], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("cls", [SDPAClassifier, EncoderClassifier])
def test_trace_and_top_eigenvalue_are_exact(cls):
    model, data = make(cls), batch()
    h = exact_hessian(model, data)
    p = h.shape[0]
    # Hutch++ with a sketch of P vectors spans the whole space: the trace is exact
    r = hessian_trace(model, ce, [data], n_probes=3 * p, method="hutch++")
    assert r.total == pytest.approx(float(h.trace()), rel=1e-8)
    e = hessian_eigenvalues(model, ce, [data], k=1, tol=1e-10, max_iter=p)
    assert e.eigenvalues[0] == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-6)
    # Hutchinson: within its standard error of the exact trace
    r = hessian_trace(model, ce, [data], n_probes=200, seed=1)
    assert abs(r.total - float(h.trace())) < 4 * r.stderr


def test_no_grad_losses_are_the_function_the_hessian_is_taken_of():
    """The encoder's eval fast path zeroes padded positions (the loss reads them through
    the mean): measurements switch it off, so L(W) under no_grad is the graph's L(W)."""
    model, data = make(EncoderClassifier), batch()
    model.eval()
    with torch.enable_grad():
        graph_loss = ce(model, data).item()  # parameters require grad: no fast path
    with torch.no_grad():
        fast_loss = float(ce(model, data))
    assert abs(fast_loss - graph_loss) > 1e-3  # the two paths differ on this batch
    ns = noise_stability(model, ce, [data], sigma=0.0, n_samples=2)
    assert ns.base_loss == pytest.approx(graph_loss, rel=1e-12)


def test_backends_and_fast_path_are_restored_also_after_an_error():
    model = make(SDPAClassifier)
    before = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled())
    assert torch.backends.mha.get_fastpath_enabled()
    with pytest.raises(KeyError), measuring(model):
        assert not torch.backends.cuda.flash_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
        assert not torch.backends.mha.get_fastpath_enabled()
        raise KeyError("boom")
    assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()) == (
        before
    )
    assert torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # a caller's own setting survives too
    try:
        with differentiable_attention():
            pass
        assert not torch.backends.mha.get_fastpath_enabled()
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


# ---------------------------------------------------------------------------------------
# a tiny Hugging Face BERT with its default attention implementation (sdpa)
# ---------------------------------------------------------------------------------------
def tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = tiny_bert_config()
    model = transformers.BertForSequenceClassification(config).double()
    assert model.config._attn_implementation == "sdpa"  # the fused path is what is tested
    return model


def bert_batch(seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return {
        "input_ids": torch.randint(0, 50, (4, 7), generator=g),
        "attention_mask": mask,
        "labels": torch.randint(0, 2, (4,), generator=g),
    }


def bert_loss(model, batch):
    return model(**batch).loss


def test_bert_trace_eigenvalue_and_products():
    model, data = tiny_bert(), bert_batch()
    model.eval()
    n = sum(p.numel() for p in model.parameters())
    v = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with pytest.raises(RuntimeError, match=FUSED_ERROR):
        plain_hvp(model, bert_loss, data, v)
    with sdpa_kernel(SDPBackend.MATH):
        expected = plain_hvp(model, bert_loss, data, v)
    with measuring(model):
        op = HessianOperator(model, bert_loss, [(data, 4)], list(model.parameters()))
        torch.testing.assert_close(op.matvec(v), expected, rtol=1e-10, atol=1e-12)
    r = hessian_trace(model, bert_loss, [data], n_probes=6, seed=0)
    e = hessian_eigenvalues(model, bert_loss, [data], k=2, max_iter=30)
    assert all(torch.isfinite(torch.tensor([r.total, r.stderr, *e.eigenvalues])))
    assert r.n_probes == 6 and e.eigenvalues[0] >= e.eigenvalues[1]
    assert e.eigenvalues[0] > 0  # a random init is no maximum


def test_ssamf_fisher_of_a_bert_with_padding_is_exact() -> None:
    # HF's attention masks branch on data, which vmap refuses: the Fisher falls back to one
    # backward pass per example, under the math attention backend
    import warnings

    from common.optim.fisher import fisher_diagonal

    model, batch = tiny_bert(), bert_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no slow "no batching rule" fallback either
        got = fisher_diagonal(model, bert_loss, [batch], params, num_samples=4, chunk_size=4)
    want = [torch.zeros_like(p) for p in params]
    model.eval()
    for i in range(4):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        with differentiable_attention():
            grads = torch.autograd.grad(bert_loss(model, one), params, allow_unused=True)
        for w, g in zip(want, grads, strict=True):
            if g is not None:
                w += g**2
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
