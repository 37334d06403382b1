"""Random streams derived from a user's seed, one per purpose."""

from __future__ import annotations

import numpy as np
import torch


def derived_seed(seed: int, purpose: str) -> int:
    """A 64-bit seed for ``purpose`` that does not replay ``torch.manual_seed(seed)``.

    Seeding a private generator with ``seed`` itself would reproduce the stream a model was
    initialised from after ``torch.manual_seed(seed)``: noise would be correlated with the
    weights, and a filter-normalised landscape direction would be the weights exactly.
    """
    state = np.random.SeedSequence([int(seed), *purpose.encode()]).generate_state(2)
    return (int(state[0]) << 32 | int(state[1])) & (2**63 - 1)


def generator(seed: int, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with :func:`derived_seed`."""
    return torch.Generator(device=device).manual_seed(derived_seed(seed, purpose))
