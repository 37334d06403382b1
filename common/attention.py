"""Attention that autograd can differentiate twice (Hessians, per-example gradients)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


@contextlib.contextmanager
def differentiable_attention() -> Iterator[None]:
    """Attention through ops that autograd can differentiate twice, for the duration.

    ``F.scaled_dot_product_attention`` picks a fused kernel (flash, memory-efficient,
    cuDNN; on CPU the fused flash kernel, also in float64) whose backward has no
    derivative and no forward-mode rule: a Hessian-vector product through HF models with
    ``attn_implementation="sdpa"`` (the default), ``nn.MultiheadAttention`` or
    ``nn.TransformerEncoderLayer`` fails with "derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented". The
    math backend computes softmax(QKᵀ/√d + mask)·V from ordinary ops: the same function,
    with every derivative. The backend is chosen when the forward pass records the
    graph, so the context must hold while the loss is computed.

    The fused fast path of ``nn.MultiheadAttention`` / ``nn.TransformerEncoder(Layer)``
    (taken in eval mode when autograd does not need the output) is switched off too
    (``torch.backends.mha``): it never carries a gradient, so it cannot break a product,
    but with a ``src_key_padding_mask`` it returns zeros at the padded positions where
    the differentiable path returns values, so a loss read from them would differ between
    the no-grad evaluations (noise stability, landscapes, the base loss) and the graph the
    Hessian is taken of. Both settings are global (not per thread) and restored on exit.
    Attention implementations outside ``F.scaled_dot_product_attention`` (flash-attn's
    own kernels, flex attention) are not covered.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
