"""Streaming image data: parquet row groups, class folders, zips, evenly spaced limits,
shuffled endless adaptation streams, and confinement of local paths."""
from __future__ import annotations

import io
import itertools
import zipfile

import pytest
import torch

from tests.core import clip_fakes as fk
from wemoe_core.model.data import labeled_batches, unlabeled_stream
from wemoe_core.pools.clip_data import ParquetImages, class_indices, open_images, spread

torch.set_num_threads(1)
LABELS = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3]          # sorted by class, as many test splits are


def tf(image):
    """A stand-in pre-processing: the top-left pixel, so items are tiny and traceable."""
    return torch.tensor(image.getpixel((0, 0)), dtype=torch.float32)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("WEMOE_DATA_DIR", str(root))
    return root


@pytest.fixture
def parquet(data_dir):
    path = data_dir / "test.parquet"
    path.write_bytes(fk.parquet_bytes(LABELS, data_dir, row_group_size=4))   # 3 row groups
    return path


def test_parquet_streams_in_order_with_labels(parquet):
    ds = open_images("test.parquet", tf)
    assert isinstance(ds, ParquetImages) and len(ds) == len(LABELS) and len(ds.plan) == 3
    items = list(ds)
    assert [y for _, y in items] == LABELS
    labels = torch.cat([y for _, y in labeled_batches(ds, batch_size=4)])
    assert labels.tolist() == LABELS


def test_limit_keeps_evenly_spaced_items(parquet):
    assert spread(11, 4) == [0, 2, 5, 8] and spread(11, None) is None and spread(3, 5) is None
    ds = open_images("test.parquet", tf, limit=4)
    assert len(ds) == 4 and [y for _, y in ds] == [LABELS[i] for i in spread(11, 4)]


def test_shuffled_stream_is_seeded_and_complete(parquet):
    ds = ParquetImages([parquet], tf, buffer=3)
    first = [x.tolist() for x, _ in ds.shuffled(seed=1)]
    assert sorted(first) == sorted(x.tolist() for x, _ in ds)
    assert first == [x.tolist() for x, _ in ds.shuffled(seed=1)]
    assert first != [x.tolist() for x, _ in ds]


def test_unlabeled_stream_over_a_parquet_stream_never_ends(parquet):
    stream = unlabeled_stream(ParquetImages([parquet], tf), batch_size=4, seed=0)
    batches = list(itertools.islice(stream, 7))                 # 2 full batches per pass
    assert all(b.shape == (4, 3) for b in batches)


def _write_images(root, names):
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(fk.png(i))


def test_class_folders_follow_the_task_class_names(data_dir):
    _write_images(data_dir / "set", ["Red_Car/1.png", "cat/2.jpg", "cat/3.png", "cat/4.PNG"])
    ds = open_images("set", tf, classnames=["dog", "cat", "red car"])
    assert sorted(ds.labels) == [1, 1, 1, 2] and ds.labeled
    assert {int(y) for _, y in ds} == {1, 2}
    with pytest.raises(ValueError, match="not a class of this task"):
        open_images("set", tf, classnames=["dog", "horse"])
    assert class_indices(["0", "2"], ["a", "b", "c"]) == {"0": 0, "2": 2}


def test_flat_folder_is_unlabeled(data_dir):
    _write_images(data_dir / "flat", ["a.png", "b.png", "c.jpeg"])
    ds = open_images("flat", tf, limit=2)
    assert len(ds) == 2 and all(y == -1 for _, y in ds)


def test_zip_of_class_folders(data_dir):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, name in enumerate(["upload/cat/1.png", "upload/dog/2.png", "upload/dog/3.png", "__MACOSX/._x.png"]):
            z.writestr(name, fk.png(i))
    (data_dir / "upload.zip").write_bytes(buf.getvalue())
    ds = open_images("upload.zip", tf, classnames=["cat", "dog"])
    assert len(ds) == 3 and sorted(ds.labels) == [0, 1, 1]
    assert [int(y) for _, y in ds] == ds.labels
    (data_dir / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        open_images("broken.zip", tf)


def test_data_paths_are_taken_as_given(data_dir, tmp_path):
    """Absolute paths anywhere and relative ones (from $WEMOE_DATA_DIR) are read as given; the
    server confines what its visitors may name (app/confine.py)."""
    _write_images(tmp_path / "elsewhere", ["a.png", "b.png"])
    for given in ("../elsewhere", str(tmp_path / "elsewhere")):
        assert len(open_images(given, tf)) == 2
    with pytest.raises(FileNotFoundError, match="no images"):
        open_images("missing", tf)


def test_hub_split_picks_its_config_from_the_cache(tmp_path, monkeypatch):
    """SVHN-style repo with two subsets: only the named one is read."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fk.fake_repo(tmp_path / "hub", "fake/svhn", {
        "cropped_digits/test-00000-of-00001.parquet": fk.parquet_bytes([1, 2, 3], tmp_path),
        "full_numbers/test-00000-of-00001.parquet": fk.parquet_bytes([0] * 5, tmp_path),
        "cropped_digits/train-00000-of-00001.parquet": fk.parquet_bytes([0] * 7, tmp_path)}, repo_type="dataset")
    ds = open_images({"repo": "fake/svhn", "config": "cropped_digits"}, tf)
    assert [y for _, y in ds] == [1, 2, 3]
    assert len(open_images({"repo": "fake/svhn", "config": "cropped_digits"}, tf, split="train")) == 7
    for missing in ("hf-hub:fake/svhn", {"repo": "fake/other"}):     # no config given / not cached
        with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
            open_images(missing, tf)


def test_hub_split_may_read_another_revision_and_columns(tmp_path, monkeypatch):
    """FER2013's test set is a WebDataset (tar shards, columns jpg/cls); the pool reads the Hub's
    parquet conversion of it, on the revision refs/convert/parquet."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fk.fake_repo(tmp_path / "hub", "fake/wds", {"test/0.tar": b"not parquet"}, repo_type="dataset")
    fk.fake_repo(tmp_path / "hub", "fake/wds", {"default/test/0000.parquet": fk.parquet_bytes(
        [4, 5, 6], tmp_path, image="jpg", label="cls")}, repo_type="dataset", ref="refs/convert/parquet", commit="f" * 40)
    split = {"repo": "fake/wds", "revision": "refs/convert/parquet", "image": "jpg", "label": "cls"}
    assert [y for _, y in open_images(split, tf)] == [4, 5, 6]
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):          # the main branch has no parquet
        open_images({"repo": "fake/wds", "image": "jpg", "label": "cls"}, tf)
