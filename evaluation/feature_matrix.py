"""Feature matrices that need not fit in memory: ``.npy`` files written and read in row blocks.

At the full protocol size a gallery of 345,000 sketches x 4096 floats is 5.65 GB (float32)
or 2.83 GB (float16), more than an evaluation should hold in memory. Features are therefore
written to an ``.npy`` file batch by batch (:class:`NpyWriter`) and read back a block of rows
at a time (:class:`NpyReader`) with plain file reads into a fresh buffer, not ``np.memmap``:
pages of a memory map that has been read stay in the process's resident set, so a map would
make the memory an evaluation reports grow with the gallery.

A *feature source* is anything with ``len(src)``, ``src.dim``, ``src.read(start, stop)``
returning a float32 tensor ``(stop - start, dim)`` on the CPU and ``src.take(rows)``: an
:class:`NpyReader`, a :class:`TensorSource` (an in-memory matrix), or a fused descriptor
(:class:`evaluation.descriptors.FusedSource`). Every stage after the features reads
features through this interface and nothing else.

The writer computes a CRC-32 of the file's bytes as it writes them (:attr:`NpyWriter.crc`),
so that a cache can store it and later check the file with :func:`file_crc32` (3-4 GB/s,
less than reading the file once more): a file changed in place, even at the same size, is
caught before it is used.
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from evaluation.output_files import LockedTemporary, OutputWriteError

#: Storage types a feature file may have.
STORAGE_DTYPES = ("float32", "float16")


@runtime_checkable
class FeatureSource(Protocol):
    """Rows of a (N, D) feature matrix, readable in blocks."""

    def __len__(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def read(self, start: int, stop: int) -> torch.Tensor:
        """float32 (stop - start, D) on the CPU."""
        ...

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        """float32 (len(rows), D): the given rows, in the given order."""
        ...


class TensorSource:
    """An in-memory (N, D) tensor as a feature source (blocks are views, cast to float32)."""

    def __init__(self, features: torch.Tensor) -> None:
        if features.ndim != 2:
            raise ValueError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
        self.features = features

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.features[start:stop].float()

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        return self.features[torch.as_tensor(rows, dtype=torch.int64)].float()


def as_source(x: torch.Tensor | np.ndarray | FeatureSource) -> FeatureSource:
    """A feature source for a tensor, an array or something that already is one."""
    if isinstance(x, torch.Tensor):
        return TensorSource(x)
    if isinstance(x, np.ndarray):
        return TensorSource(torch.from_numpy(x))
    if isinstance(x, FeatureSource):
        return x
    raise TypeError(f"not a feature matrix or feature source: {type(x).__name__}")


def read_all(src: FeatureSource | torch.Tensor, block: int = 65536) -> torch.Tensor:
    """The whole matrix in memory, float32 (N, D)."""
    src = as_source(src)
    if isinstance(src, TensorSource):
        return src.features.float()
    out = torch.empty(len(src), src.dim)
    for a in range(0, len(src), block):
        b = min(a + block, len(src))
        out[a:b] = src.read(a, b)
    return out


def read_rows(src: FeatureSource | torch.Tensor, rows: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Rows ``rows`` (any order) of a source, float32 (len(rows), D)."""
    src = as_source(src)
    rows = torch.as_tensor(np.asarray(rows), dtype=torch.int64)
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= len(src)):
        raise IndexError(f"row index out of range for {len(src)} rows")
    return src.take(rows)


class NpyWriter:
    """Write an (N, D) ``.npy`` file batch by batch, atomically, with a CRC-32 of its bytes.

    Rows go to a locked temporary file beside ``path``
    (:class:`evaluation.output_files.LockedTemporary`); :meth:`close` checks that exactly
    ``num_rows`` rows were written, flushes to disk and renames it over ``path``. The header
    is written when the first batch tells the width D. An interrupted writer leaves no file
    at ``path``. After :meth:`close`, :attr:`crc` is the CRC-32 of the whole file. A write
    that fails (a full disk) removes the temporary and raises
    :class:`evaluation.output_files.OutputWriteError` naming ``path``.
    """

    def __init__(self, path: str | os.PathLike, num_rows: int, dtype: str = "float32") -> None:
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
        self.path = Path(path)
        self.num_rows = int(num_rows)
        self.dtype = np.dtype(dtype)
        self.dim: int | None = None
        self.rows = 0
        self.crc = 0
        try:
            self._out = LockedTemporary(self.path)
        except OSError as err:
            raise OutputWriteError(self.path, err) from None

    def _put(self, data: bytes | memoryview) -> None:
        try:
            self._out.fh.write(data)
        except OSError as err:
            self.abort()
            raise OutputWriteError(self.path, err) from None
        self.crc = zlib.crc32(data, self.crc)

    def write(self, batch: torch.Tensor | np.ndarray) -> None:
        """Append rows (B, D) (any float type; stored as the writer's dtype)."""
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().cpu().float().numpy()
        batch = np.ascontiguousarray(batch, dtype=self.dtype)
        if batch.ndim != 2:
            raise ValueError(f"batch must be 2-D, got shape {batch.shape}")
        if self.dim is None:
            self.dim = batch.shape[1]
            header = io.BytesIO()
            np.lib.format.write_array_header_2_0(header, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                          "fortran_order": False, "shape": (self.num_rows, self.dim)})
            self._put(header.getvalue())
        elif batch.shape[1] != self.dim:
            raise ValueError(f"batch has {batch.shape[1]} columns, earlier batches had {self.dim}")
        if self.rows + len(batch) > self.num_rows:
            raise ValueError(f"more than the announced {self.num_rows} rows")
        self._put(memoryview(batch).cast("B"))
        self.rows += len(batch)

    def close(self) -> Path:
        if self.rows != self.num_rows or self.dim is None:
            self.abort()
            raise ValueError(f"{self.path}: wrote {self.rows} rows, announced {self.num_rows}")
        try:
            return self._out.commit()
        except OSError as err:
            raise OutputWriteError(self.path, err) from None

    def abort(self) -> None:
        self._out.abort()

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._out.fh.closed:
            self.close()


def file_crc32(path: str | os.PathLike, piece: int = 1 << 24) -> int:
    """CRC-32 of a file's bytes (the value :attr:`NpyWriter.crc` gives for a file it wrote)."""
    crc = 0
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(piece)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                return crc
            crc = zlib.crc32(view[:n], crc)


class NpyReader:
    """Read row blocks of a 2-D C-order ``.npy`` file (float32 or float16) as float32 tensors."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"{path}: unsupported .npy format version {version}")
            self.offset = fh.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{self.path}: expected a 2-D C-order array, got shape {shape}")
        if dtype.name not in STORAGE_DTYPES:
            raise ValueError(f"{self.path}: dtype {dtype} is not one of {STORAGE_DTYPES}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        expected = self.offset + self.shape[0] * self.shape[1] * dtype.itemsize
        if self.path.stat().st_size != expected:
            raise ValueError(f"{self.path}: file size does not match its header (truncated?)")

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[1]

    def read(self, start: int, stop: int) -> torch.Tensor:
        start, stop = max(0, int(start)), min(len(self), int(stop))
        buf = np.empty((max(0, stop - start), self.dim), dtype=self.dtype)
        view = memoryview(buf).cast("B")
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.offset + start * self.dim * self.dtype.itemsize)
            done = 0
            while done < len(view):
                n = fh.readinto(view[done:])
                if not n:
                    raise OSError(f"{self.path}: unexpected end of file")
                done += n
        out = torch.from_numpy(buf)
        return out if out.dtype == torch.float32 else out.float()

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        """The given rows in the given order; consecutive rows are read in one call."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        order = torch.argsort(rows)
        sorted_rows = rows[order].numpy()
        buf = np.empty((len(rows), self.dim), dtype=self.dtype)
        if len(rows):
            row_bytes = self.dim * self.dtype.itemsize
            breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
            starts = np.concatenate([[0], breaks])
            stops = np.concatenate([breaks, [len(sorted_rows)]])
            view = memoryview(buf).cast("B")
            fd = os.open(self.path, os.O_RDONLY)
            try:
                for i, j in zip(starts.tolist(), stops.tolist()):
                    want = (j - i) * row_bytes
                    got = os.preadv(fd, [view[i * row_bytes : j * row_bytes]], self.offset + int(sorted_rows[i]) * row_bytes)
                    if got != want:
                        raise OSError(f"{self.path}: unexpected end of file")
            finally:
                os.close(fd)
        out = torch.empty(len(rows), self.dim)
        out[order] = torch.from_numpy(buf).float()
        return out
