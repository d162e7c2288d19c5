"""Batches for adaptation (unlabeled, endless, seeded) and evaluation (labeled, one pass).

Datasets are plain ``torch.utils.data.Dataset`` objects whose items are ``(image, label)`` or an
image alone, already pre-processed to a float tensor (C, H, W). Streaming datasets (real test
sets decoded on the fly) fit the same interface.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset


def _images(batch):
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def unlabeled_stream(dataset: Dataset, batch_size: int, seed: int = 0, num_workers: int = 0) -> Iterator[torch.Tensor]:
    """Endless shuffled batches of images (labels dropped), reproducible for a given seed."""
    if len(dataset) == 0:
        raise ValueError("the adaptation data set is empty: provide at least one image per task")
    if isinstance(dataset, IterableDataset):      # streamed (real test sets): it shuffles itself
        yield from _iterable_stream(dataset, batch_size, seed, num_workers)
        return
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True, drop_last=True,
                        generator=gen, num_workers=num_workers)
    while True:
        for batch in loader:
            yield _images(batch)


def _iterable_stream(dataset: IterableDataset, batch_size: int, seed: int, num_workers: int) -> Iterator[torch.Tensor]:
    """Endless batches from a streamed dataset: its ``shuffled(seed)`` copy when it has one,
    with ``set_epoch`` called before each pass so every pass has a new order."""
    ds = dataset.shuffled(seed) if hasattr(dataset, "shuffled") else dataset
    epoch = 0
    while True:
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        for batch in DataLoader(ds, batch_size=min(batch_size, len(ds)), drop_last=True, num_workers=num_workers):
            yield _images(batch)
        epoch += 1


def labeled_batches(dataset: Dataset, batch_size: int = 256, num_workers: int = 0) -> DataLoader:
    """One ordered pass over (images, labels)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


class TensorImages(Dataset):
    """In-memory uint8 images (N, H, W, 3) with labels, normalised on access."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, mean, std):
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = (self.images[i].permute(2, 0, 1).float() / 255.0 - self.mean) / self.std
        return x if self.labels is None else (x, self.labels[i])
