"""Images for real CLIP pools, decoded on the fly: Hub parquet splits (read row group by row
group, never all at once), local image folders, and zips of images.

Items are ``(image, label)``: the pre-processed tensor (3, H, W) and the class index, or -1 where
a source has no labels (a flat folder, a flat zip: fine for adaptation, not for evaluation).
Labels come from class subfolders, matched to the task's class names (case, ``_`` and ``-``
ignored) or given as indices ``0..N-1``.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, Subset

from ..sources import hub, paths

log = logging.getLogger(__name__)

Transform = Callable[[Image.Image], torch.Tensor]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_MEMBER_BYTES = 64 << 20      # a zip member larger than this is skipped (zip-bomb guard)
HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class HubSplit:
    """A split of a Hub dataset stored as parquet (``image`` struct of bytes, ``label`` int)."""

    repo: str                      # "tanganke/sun397"
    split: str = "test"
    config: str | None = None      # subset folder, e.g. "cropped_digits" for SVHN
    image: str = "image"           # column names
    label: str = "label"
    revision: str | None = None    # e.g. "refs/convert/parquet": the Hub's parquet copy of a non-parquet dataset

    @classmethod
    def from_dict(cls, d: Mapping) -> "HubSplit":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if d.get(k) is not None})

    def patterns(self) -> list[str]:
        """Where the parquet files of this split sit in the repository (push_to_hub and the
        Hub's parquet conversion layouts)."""
        s, c = self.split, self.config
        if c:
            return [f"{c}/{s}-*.parquet", f"{c}/{s}/*.parquet"]
        return [f"data/{s}-*.parquet", f"data/{s}/*.parquet", f"{s}-*.parquet", f"{s}/*.parquet", f"default/{s}/*.parquet"]


def decode(cell) -> Image.Image:
    """A parquet image cell (``{"bytes": ..., "path": ...}`` or raw bytes) as an RGB image."""
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not data:
        raise ValueError("an image cell holds no bytes (images stored by path are not supported)")
    return Image.open(io.BytesIO(data)).convert("RGB")


def spread(total: int, limit: int | None) -> list[int] | None:
    """Evenly spaced indices of ``limit`` out of ``total`` (test splits are often sorted by
    class, so the first ``limit`` would be a few classes only). None means all."""
    if limit is None or limit >= total:
        return None
    return [k * total // limit for k in range(max(limit, 0))]


class ParquetImages(IterableDataset):
    """Streams (image, label) from parquet files, one row group at a time. ``shuffle`` (for
    adaptation) visits row groups in a random order per epoch and mixes rows in a buffer."""

    def __init__(self, files: Sequence[str | os.PathLike], transform: Transform, *, image: str = "image",
                 label: str | None = "label", limit: int | None = None, shuffle: bool = False, seed: int = 0,
                 buffer: int = 512):
        import pyarrow.parquet as pq

        self.files, self.transform, self.image, self.label = [str(f) for f in files], transform, image, label
        self.shuffle, self.seed, self.buffer, self.epoch = shuffle, seed, buffer, 0
        groups = []                                                   # (file, row group, first row, rows)
        start = 0
        for f in self.files:
            pf = pq.ParquetFile(f)
            meta, names = pf.metadata, set(pf.schema_arrow.names)
            if image not in names:
                raise ValueError(f"{Path(f).name} has no column {image!r} (columns: {sorted(names)})")
            if label and label not in names:
                self.label = None
            for rg in range(meta.num_row_groups):
                n = meta.row_group(rg).num_rows
                groups.append((f, rg, start, n))
                start += n
        keep = spread(start, limit)
        self.plan = [(f, rg, self._pick(keep, s, n)) for f, rg, s, n in groups]   # local rows to yield
        self.plan = [p for p in self.plan if p[2] is None or p[2]]
        self._len = start if keep is None else len(keep)
        self._rows_in = {(f, rg): n for f, rg, _, n in groups}

    @staticmethod
    def _pick(keep: list[int] | None, start: int, n: int) -> list[int] | None:
        return None if keep is None else [i - start for i in keep if start <= i < start + n]

    @property
    def labeled(self) -> bool:
        return self.label is not None

    def __len__(self) -> int:
        return self._len

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self, rank: int, world: int) -> "ParquetImages":
        """A copy that yields every ``world``-th item from the ``rank``-th (one rank's share of the
        test set, for distributed evaluation); only those rows are decoded."""
        other, pos, plan = copy.copy(self), 0, []
        for f, rg, rows in self.plan:
            rows = list(range(self._rows_in[(f, rg)])) if rows is None else rows
            mine = [r for k, r in enumerate(rows) if (pos + k) % world == rank]
            pos += len(rows)
            if mine:
                plan.append((f, rg, mine))
        other.plan, other._len = plan, sum(len(r) for _, _, r in plan)
        return other

    def shuffled(self, seed: int = 0) -> "ParquetImages":
        """A copy that streams in a seeded random order (for adaptation)."""
        other = copy.copy(self)
        other.shuffle, other.seed, other.epoch = True, seed, 0
        return other

    def _rows(self, plan) -> Iterator[tuple]:
        import pyarrow.parquet as pq

        cols = [self.image] + ([self.label] if self.label else [])
        for f, rg, rows in plan:
            wanted = None if rows is None else set(rows)
            offset = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=64, row_groups=[rg], columns=cols):
                data = batch.to_pydict()
                for i, cell in enumerate(data[self.image]):
                    if wanted is None or offset + i in wanted:
                        yield cell, (data[self.label][i] if self.label else -1)
                offset += batch.num_rows

    def _item(self, row) -> tuple[torch.Tensor, int]:
        cell, label = row
        return self.transform(decode(cell)), int(label)

    def __iter__(self):
        plan = list(self.plan)
        info = torch.utils.data.get_worker_info()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            plan = [plan[i] for i in torch.randperm(len(plan), generator=g)]
        if info is not None:                                   # each worker streams its share
            plan = plan[info.id::info.num_workers]
        rows = self._rows(plan)
        if not self.shuffle:
            yield from (self._item(r) for r in rows)
            return
        buf: list = []
        for r in rows:                                          # shuffle buffer of encoded rows
            buf.append(r)
            if len(buf) >= self.buffer:
                yield self._item(buf.pop(int(torch.randint(len(buf), (1,), generator=g))))
        while buf:
            yield self._item(buf.pop(int(torch.randint(len(buf), (1,), generator=g))))


def _norm(name: str) -> str:
    return name.lower().replace("_", " ").replace("-", " ").strip()


def class_indices(folders: Sequence[str], classnames: Sequence[str] | None) -> dict[str, int]:
    """Label of each class folder: its class name's index, or the folder's own index
    (``0``..``N-1``), or (no class names given) its sorted position."""
    folders = sorted(folders)
    if classnames is None:
        return {f: i for i, f in enumerate(folders)}
    lookup = {_norm(c): i for i, c in enumerate(classnames)}
    if all(_norm(f) in lookup for f in folders):
        return {f: lookup[_norm(f)] for f in folders}
    if all(f.isdigit() and int(f) < len(classnames) for f in folders):
        return {f: int(f) for f in folders}
    bad = next(f for f in folders if _norm(f) not in lookup)
    raise ValueError(f"folder {bad!r} is not a class of this task; name class folders after the class names "
                     f"(e.g. {classnames[0]!r}) or by index 0..{len(classnames) - 1}, or use a flat folder (unlabeled)")


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return Path(base).suffix.lower() in IMAGE_SUFFIXES and not base.startswith(".") and "__MACOSX" not in name


def _labelled(names: Sequence[str], classnames: Sequence[str] | None) -> tuple[list[str], list[int], bool]:
    """Relative names ``class/file`` or ``file`` -> (names, labels, labeled)."""
    names = sorted(n for n in names if _is_image(n))
    if not names:
        raise ValueError("no images found (looked for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")")
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    if not tops or any("/" not in n for n in names):
        return names, [-1] * len(names), False
    index = class_indices(sorted(tops), classnames)
    return names, [index[n.split("/", 1)[0]] for n in names], True


class FolderImages(Dataset):
    """Images in a folder: class subfolders give labels, a flat folder is unlabeled."""

    def __init__(self, root: Path, transform: Transform, classnames: Sequence[str] | None = None):
        rel = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        rel = [r for r in rel if r.count("/") <= 1]             # root/file or root/class/file
        self.root, self.transform = root, transform
        self.names, self.labels, self.labeled = _labelled(rel, classnames)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.root / self.names[i]) as im:
            return self.transform(im.convert("RGB")), self.labels[i]


class ZipImages(Dataset):
    """Images inside a zip, read member by member (nothing is extracted to disk)."""

    def __init__(self, path: Path, transform: Transform, classnames: Sequence[str] | None = None):
        try:
            with zipfile.ZipFile(path) as z:
                infos = [i for i in z.infolist() if not i.is_dir()]
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path.name} is not a readable zip ({e})") from None
        big = [i.filename for i in infos if i.file_size > MAX_MEMBER_BYTES]
        if big:
            log.warning("skipping %d zip members over %d MB (first: %s)", len(big), MAX_MEMBER_BYTES >> 20, big[0])
        names = [i.filename for i in infos if i.file_size <= MAX_MEMBER_BYTES]
        self.prefix = _common_folder(names)
        self.path, self.transform, self._zip, self._pid = path, transform, None, None
        rel, self.labels, self.labeled = _labelled([n[len(self.prefix):] for n in names], classnames)
        self.names = [self.prefix + r for r in rel]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._zip is None or self._pid != os.getpid():       # one handle per worker process
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        with Image.open(io.BytesIO(self._zip.read(self.names[i]))) as im:
            return self.transform(im.convert("RGB")), self.labels[i]

    def __getstate__(self):
        return {**self.__dict__, "_zip": None, "_pid": None}


def _common_folder(names: Sequence[str]) -> str:
    """``"pics/"`` when every image sits under one top folder (a zipped folder), else ``""``."""
    tops = {n.split("/", 1)[0] if "/" in n else None for n in names if _is_image(n)}
    return f"{tops.pop()}/" if len(tops) == 1 and None not in tops else ""


def open_images(source, transform: Transform, *, classnames: Sequence[str] | None = None, split: str = "test",
                limit: int | None = None, root: str | Path | None = None, shuffle: bool = False, seed: int = 0) -> Dataset:
    """A dataset of (image, label) from a :class:`HubSplit` (or its dict, or ``"hf-hub:owner/name"``),
    a local folder, a zip, or a parquet file (relative paths from ``root``, default
    ``$WEMOE_DATA_DIR`` or ``./data``). ``limit`` keeps evenly spaced items; ``shuffle`` only affects Hub/parquet streams."""
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        source = HubSplit(source[len(HUB_PREFIX):], split=split)
    if isinstance(source, Mapping):
        source = HubSplit.from_dict({"split": split, **source})
    if isinstance(source, HubSplit):
        files = hub.snapshot_files(source.repo, source.patterns(), repo_type="dataset", revision=source.revision)
        return ParquetImages(files, transform, image=source.image, label=source.label, limit=limit, shuffle=shuffle, seed=seed)
    path = paths.local_data_path(source, root)
    if path.suffix == ".parquet":
        return ParquetImages([path], transform, limit=limit, shuffle=shuffle, seed=seed)
    if path.is_dir():
        ds: Dataset = FolderImages(path, transform, classnames)
    elif path.suffix.lower() == ".zip":
        ds = ZipImages(path, transform, classnames)
    else:
        raise ValueError(f"{path.name}: give a folder of images, a .zip of images, or a .parquet file")
    keep = spread(len(ds), limit)
    return ds if keep is None else Subset(ds, keep)
