"""Sparse SAM (Mi et al., NeurIPS 2022): SSAM-F (Fisher mask) and SSAM-D (dynamic mask)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from common.optim.base import Params
from common.optim.fisher import LossFn, fisher_diagonal
from common.optim.options import MAX_GRAD_NORM, SEED, Option, frozen
from common.optim.perturb import norm_dtype
from common.optim.sam import ADAPTIVE, ETA, RHO, SAM
from common.rng import generator

STRATEGIES = ("weight", "gradient", "random")

#: Options of both SSAM-F and SSAM-D.
SPARSITY = Option(float, "SSAM fraction of coordinates not perturbed", min=0, lt=1)
UPDATE_FREQ = Option(int, "SSAM mask update period (epochs)", min=1)


def num_live(total: int, sparsity: float) -> int:
    """Coordinates perturbed out of ``total``: round((1 − sparsity)·total)."""
    return round((1.0 - sparsity) * total)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _SparseSAM(SAM):
    """SAM whose perturbation keeps a global top-k of coordinates: e ← m ⊙ e.

    Masks live in ``state[p]["mask"]`` as 0/1 tensors of the parameter's dtype; scores
    are compared in at least float32 (:func:`norm_dtype`).
    """

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer,
        *,
        sparsity: float,
        update_freq: int,
        **sam_kwargs: Any,
    ) -> None:
        self.check_options(sparsity=sparsity, update_freq=update_freq)
        super().__init__(params, base_optimizer, **sam_kwargs)
        self.sparsity, self.update_freq = sparsity, update_freq

    def mask_update_due(self, epoch: int) -> bool:
        """Masks are recomputed at epochs 0, update_freq, 2·update_freq, ..."""
        return epoch % self.update_freq == 0

    def mask_density(self) -> float:
        """Fraction of coordinates currently perturbed."""
        masks = [self.state[p]["mask"] for p in self._params() if "mask" in self.state[p]]
        total = sum(m.numel() for m in masks)
        return sum(int(torch.count_nonzero(m)) for m in masks) / max(total, 1)

    def _masks(self, params: list[Tensor]) -> list[Tensor]:
        try:
            return [self.state[p]["mask"] for p in params]
        except KeyError:
            raise RuntimeError(
                f"{type(self).__name__} has no mask yet: call update_mask(...) (or "
                "prepare_epoch(0, ...)) before the first step"
            ) from None

    def _flat(self, tensors: Iterable[Tensor]) -> Tensor:
        """One score vector, in float32 or the parameters' wider dtype (float64)."""
        params = self._params()
        device, dtype = params[0].device, norm_dtype(params)
        return torch.cat([t.reshape(-1).to(device, dtype) for t in tensors])

    @staticmethod
    def _sum_over_ranks(flat: Tensor) -> Tensor:
        """Scores from local data (gradients, Fisher) summed over ranks: one mask for all."""
        if _distributed():
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return flat

    def _store_mask(self, live: Tensor) -> None:
        """Splits a flat boolean mask over the parameters (rank 0's copy wins everywhere)."""
        if _distributed():  # ties may break differently on another device: one source of truth
            as_bytes = live.to(torch.uint8)
            dist.broadcast(as_bytes, src=0)
            live = as_bytes.bool()
        start = 0
        for p in self._params():
            # in the parameter's dtype, as the reference keeps it: a bool mask would be
            # converted on every step, which costs more than the perturbation itself
            mask = live[start : start + p.numel()].view_as(p)
            self.state[p]["mask"] = mask.to(device=p.device, dtype=p.dtype, copy=True)
            start += p.numel()

    @staticmethod
    def _top(scores: Tensor, k: int) -> Tensor:
        """Boolean vector with ones at the k largest scores (exactly k)."""
        live = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
        live[torch.topk(scores, k, sorted=False).indices] = True
        return live


class SSAMF(_SparseSAM):
    """Fisher sparse SAM: perturb the coordinates with the largest empirical Fisher.

    Call :meth:`update_mask` (or :meth:`prepare_epoch` at the start of every epoch) before
    the first step; the reference starts from an all-zero mask, i.e. no perturbation at
    all until its first update. Clipping as in :class:`SAM`: a caller's clipped g(W) only
    picks e; ``max_grad_norm`` clips the gradient of the base step.

    Args:
        rho, adaptive, eta: as in :class:`SAM`.
        sparsity: fraction in [0, 1) of coordinates *not* perturbed.
        num_samples: examples whose squared gradients make up the Fisher diagonal.
        update_freq: recompute the mask every this many epochs.
        chunk_size: examples per vectorised per-example-gradient chunk (None: automatic).
        max_grad_norm: as in :class:`SAM`.
    """

    OPTIONS = frozen(
        rho=RHO,
        sparsity=SPARSITY,
        num_samples=Option(int, "SSAM-F examples in the Fisher estimate", min=1),
        update_freq=UPDATE_FREQ,
        adaptive=ADAPTIVE,
        eta=ETA,
        chunk_size=Option(int, "SSAM-F per-example gradient chunk", min=1, nullable=True),
        max_grad_norm=MAX_GRAD_NORM,
    )

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer = torch.optim.SGD,
        *,
        rho: float = 0.05,
        sparsity: float = 0.5,
        num_samples: int = 16,
        update_freq: int = 1,
        adaptive: bool = False,
        eta: float = 0.0,
        chunk_size: int | None = None,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.check_options(num_samples=num_samples, chunk_size=chunk_size)
        super().__init__(
            params,
            base_optimizer,
            sparsity=sparsity,
            update_freq=update_freq,
            rho=rho,
            adaptive=adaptive,
            eta=eta,
            max_grad_norm=max_grad_norm,
            **base_kwargs,
        )
        self.num_samples, self.chunk_size = num_samples, chunk_size

    @torch.no_grad()
    def update_mask(self, model: nn.Module, loss_fn: LossFn, data: Iterable[Any]) -> None:
        """Keeps the top (1 − sparsity) of coordinates by Fisher Σᵢ gᵢ² on ``num_samples``
        examples of ``data``; BatchNorm statistics and the model's mode are left as they are."""
        params = self._params()
        fisher = fisher_diagonal(
            model, loss_fn, data, params, num_samples=self.num_samples, chunk_size=self.chunk_size
        )
        scores = self._sum_over_ranks(self._flat(fisher))
        self._store_mask(self._top(scores, num_live(scores.numel(), self.sparsity)))

    def prepare_epoch(
        self, epoch: int, *, model: nn.Module, loss_fn: LossFn, data: Iterable[Any]
    ) -> bool:
        """Updates the mask if ``epoch`` is due (or there is none yet); True if it did."""
        if self.mask_update_due(epoch) or not self._has_mask():
            self.update_mask(model, loss_fn, data)
            return True
        return False

    def _has_mask(self) -> bool:
        return all("mask" in self.state[p] for p in self._params())


class SSAMD(_SparseSAM):
    """Dynamic sparse SAM: a random mask that drops and regrows coordinates.

    Every ``update_freq`` epochs a fraction dr = drop_rate·(1 + cos(π·epoch/epochs))/2 of
    the live coordinates with the lowest ``drop_strategy`` score die and as many dead ones
    (dead before this update) with the highest ``growth_strategy`` score come alive, so
    the sparsity never changes. Scores: weight |W|, gradient |g| (summed over ranks),
    random. Call :meth:`prepare_epoch` at the start of every epoch; the update is applied
    at the next step, when the gradient at W is known. Clipping as in :class:`SAM`: a
    caller's clipped g(W) only picks e (and the gradient scores); ``max_grad_norm`` clips
    the gradient of the base step.

    Args:
        rho, adaptive, eta: as in :class:`SAM`.
        sparsity: fraction in [0, 1) of coordinates *not* perturbed.
        drop_rate: initial fraction in [0, 1] of live coordinates replaced per update.
        drop_strategy, growth_strategy: one of weight, gradient, random.
        update_freq: update the mask every this many epochs.
        epochs: length of the cosine schedule (the run's number of epochs).
        seed: seed of the optimizer's generator (initial mask, random scores); the same
            on every rank. None: drawn from torch's global RNG.
        max_grad_norm: as in :class:`SAM`.
    """

    OPTIONS = frozen(
        rho=RHO,
        sparsity=SPARSITY,
        drop_rate=Option(
            float, "SSAM-D initial fraction of live coordinates replaced", min=0, max=1
        ),
        drop_strategy=Option(str, "SSAM-D drop score", choices=STRATEGIES),
        growth_strategy=Option(str, "SSAM-D growth score", choices=STRATEGIES),
        update_freq=UPDATE_FREQ,
        epochs=Option(int, "SSAM-D cosine schedule length (the run's epochs)", min=1),
        adaptive=ADAPTIVE,
        eta=ETA,
        seed=SEED,
        max_grad_norm=MAX_GRAD_NORM,
    )

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer = torch.optim.SGD,
        *,
        rho: float = 0.05,
        sparsity: float = 0.5,
        drop_rate: float = 0.5,
        drop_strategy: str = "gradient",
        growth_strategy: str = "random",
        update_freq: int = 5,
        epochs: int = 200,
        adaptive: bool = False,
        eta: float = 0.0,
        seed: int | None = None,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.check_options(
            drop_rate=drop_rate,
            drop_strategy=drop_strategy,
            growth_strategy=growth_strategy,
            epochs=epochs,
            seed=seed,
        )
        super().__init__(
            params,
            base_optimizer,
            sparsity=sparsity,
            update_freq=update_freq,
            rho=rho,
            adaptive=adaptive,
            eta=eta,
            max_grad_norm=max_grad_norm,
            **base_kwargs,
        )
        self.drop_rate, self.epochs = drop_rate, epochs
        self.drop_strategy, self.growth_strategy = drop_strategy, growth_strategy
        self.seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else seed
        self._rng = generator(self.seed, "ssamd")  # CPU: the same stream on any device
        self.pending_epoch: int | None = None
        total = sum(p.numel() for p in self._params())
        scores = torch.rand(total, generator=self._rng).to(self._params()[0].device)
        self._store_mask(self._top(scores, num_live(total, sparsity)))

    def drop_fraction(self, epoch: int) -> float:
        """Cosine-decayed drop rate at ``epoch``."""
        return (
            self.drop_rate * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs)) / 2
        )

    def prepare_epoch(self, epoch: int, **_: Any) -> bool:
        """Schedules a mask update for the next step if ``epoch`` is due; True if so."""
        if self.mask_update_due(epoch):
            self.pending_epoch = epoch
            return True
        return False

    def _score(self, strategy: str) -> Tensor:
        params = self._params()
        if strategy == "weight":
            return self._flat(p.detach().abs() for p in params)
        if strategy == "gradient":
            missing = [tuple(p.shape) for p in params if p.grad is None]
            if missing:
                raise RuntimeError(
                    f"gradient-based mask update needs p.grad for every parameter ({missing[:3]} "
                    "have none): call it after a backward pass"
                )
            return self._sum_over_ranks(self._flat(p.grad.abs() for p in params))
        total = sum(p.numel() for p in params)
        return torch.rand(total, generator=self._rng).to(params[0].device)

    @torch.no_grad()
    def update_mask(self, epoch: int) -> None:
        """Drops the weakest live coordinates and regrows as many of the strongest dead ones."""
        live = self._flat(self.state[p]["mask"] for p in self._params()) > 0
        n_live = int(live.sum())
        n_swap = min(round(self.drop_fraction(epoch) * n_live), live.numel() - n_live)
        if n_swap:
            drop = self._score(self.drop_strategy).masked_fill(~live, math.inf)
            grow = self._score(self.growth_strategy).masked_fill(live, -math.inf)
            new = live.clone()
            new[torch.topk(drop, n_swap, largest=False, sorted=False).indices] = False
            new[torch.topk(grow, n_swap, sorted=False).indices] = True
            live = new
        self._store_mask(live)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        if self.pending_epoch is not None:
            self.update_mask(self.pending_epoch)
            self.pending_epoch = None
        super().first_step(zero_grad)

    def _extra_state(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rng": self._rng.get_state(),
            "pending_epoch": self.pending_epoch,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.seed, self.pending_epoch = int(state["seed"]), state["pending_epoch"]
        self._rng.set_state(state["rng"])
