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


class DeviceGenerators:
    """One seeded noise stream per device, identical on every rank for the same seed, and
    their states for a checkpoint (the optimizers' noise: NSO's, RWP's)."""

    def __init__(self, seed: int, purpose: str) -> None:
        self.seed, self.purpose = seed, purpose
        self._streams: dict[str, torch.Generator] = {}

    def __call__(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._streams:
            self._streams[key] = generator(self.seed, f"{self.purpose}:{key}", device)
        return self._streams[key]

    def states(self) -> dict[str, torch.Tensor]:
        return {key: stream.get_state() for key, stream in self._streams.items()}

    def load(self, seed: int, states: dict[str, torch.Tensor]) -> None:
        self.seed, self._streams = seed, {}
        for key, state in states.items():
            self(torch.device(key)).set_state(state)
