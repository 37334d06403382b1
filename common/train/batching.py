"""Batches of an epoch: each process's share of every global batch, and augmentation drawn
from each example's own seed, so neither depends on the number of processes or workers."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from common.rng import derived_seed
from common.train.task import Task


class SeededDataset(Dataset):
    """Draws each example's random augmentation from its own seed (seed, epoch, index).

    Augmentation then does not depend on the number of processes or data-loader workers,
    nor on where a resumed run restarted, and it leaves the global RNG to the model.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.base, self.epoch = dataset, derived_seed(seed, "augment"), 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        # CPU transforms draw from the default generator; torch.manual_seed would also
        # reseed every accelerator (~200 us), the generator alone costs ~2 us
        rng = torch.default_generator
        saved = rng.get_state()
        rng.manual_seed((self.base + self.epoch * 1_000_003 + index) % 2**63)
        try:
            return self.dataset[index]
        finally:
            rng.set_state(saved)


def make_loader(dataset: Dataset, batches: list[list[int]], task: Task, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=task.collate(dataset),
        # its own generator: creating an iterator must not consume the global RNG
        generator=torch.Generator().manual_seed(0),
    )


def epoch_batches(
    n: int, batch: int, *, world: int, rank: int, seed: int, epoch: int, drop_last: bool
) -> tuple[list[list[int]], list[int]]:
    """This process's share of each global batch of an epoch, and each global batch's size.

    One seeded permutation of the ``n`` examples is cut into global batches of ``batch``;
    process ``rank`` takes every ``world``-th example of each (the order of PyTorch's
    ``DistributedSampler``), so a global batch holds the same examples whatever the number
    of processes. The last partial batch is kept unless ``drop_last``; no example is seen
    twice in an epoch. It is dropped all the same when it has fewer examples than there are
    processes (a process would have none).
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    full, rest = divmod(n, batch)
    sizes = [batch] * full + ([rest] if rest and not drop_last and rest >= world else [])
    starts = [k * batch for k in range(len(sizes))]
    return [perm[a : a + size][rank::world] for a, size in zip(starts, sizes, strict=True)], sizes
