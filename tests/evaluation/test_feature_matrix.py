"""Feature matrices on disk: written whole or not at all, read back in blocks, checksummed."""

import zlib

import numpy as np
import pytest
import torch

from evaluation.feature_matrix import (
    NpyReader,
    NpyWriter,
    TensorSource,
    file_crc32,
    read_all,
    read_rows,
)


def test_npy_writer_is_atomic_and_reader_checks_size(tmp_path):
    path = tmp_path / "f.npy"
    w = NpyWriter(path, 10)
    w.write(np.ones((4, 3)))
    w.abort()
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="announced"):
        with NpyWriter(path, 10) as w:
            w.write(np.ones((4, 3)))
            w.close()
    assert not path.exists()
    data = np.arange(30, dtype=np.float32).reshape(10, 3)
    with NpyWriter(path, 10) as w:
        w.write(data[:6])
        w.write(data[6:])
    assert np.array_equal(np.load(path), data)
    r = NpyReader(path)
    assert torch.equal(r.read(2, 5), torch.tensor(data[2:5]))
    assert torch.equal(read_rows(r, [9, 0, 4]), torch.tensor(data[[9, 0, 4]]))
    assert torch.equal(read_rows(TensorSource(torch.tensor(data)), [9, 0, 4]), torch.tensor(data[[9, 0, 4]]))
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 4)
    with pytest.raises(ValueError, match="truncated"):
        NpyReader(path)


def test_the_writers_crc_is_the_crc_of_the_file(tmp_path):
    data = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float16)
    with NpyWriter(tmp_path / "f.npy", 50, "float16") as w:
        for a in range(0, 50, 16):
            w.write(data[a : a + 16])
    raw = (tmp_path / "f.npy").read_bytes()
    assert w.crc == zlib.crc32(raw) == file_crc32(tmp_path / "f.npy", piece=100)
    assert np.array_equal(np.load(tmp_path / "f.npy"), data)
    assert torch.equal(read_all(NpyReader(tmp_path / "f.npy")), torch.tensor(data).float())
