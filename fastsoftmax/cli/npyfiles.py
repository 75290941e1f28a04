""".npy files a batch of rows at a time: checked inputs, outputs that appear whole or not at all.

Reading or writing a memory map leaves every touched page counted in the
process's resident memory until it is unmapped, so a pass over an 800 MB file
would hold 800 MB. `release_pages` drops those pages after each batch: the data
stays in the file (and the page cache), and resident memory stays at about one
batch.
"""

import contextlib
import errno
import mmap
import os
import secrets
from dataclasses import dataclass

import numpy as np

from ._errors import CommandError

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _is_supported(dtype):
    """Real floats of 16, 32 or 64 bits, integers and bools (as the library computes)."""
    if dtype.kind == "f":
        return dtype.itemsize in (2, 4, 8)
    return dtype.kind in "biu"


def _read_header(path):
    """Shape, Fortran order, dtype and data offset of a .npy file, or CommandError."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version not in _HEADER_READERS:
                raise CommandError(
                    f"{path}: unsupported .npy format version {version[0]}.{version[1]}"
                )
            shape, fortran_order, dtype = _HEADER_READERS[version](file)
            return shape, fortran_order, dtype, file.tell(), os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        raise CommandError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise CommandError(f"input is a directory, not a .npy file: {path}") from None
    except ValueError as exc:
        raise CommandError(f"{path} is not a .npy file ({exc})") from None


class LogitsFile:
    """A checked 2-D .npy file of logits, read a batch of rows at a time.

    C-ordered files are memory-mapped: a batch is a view of the map, and
    `release` drops its pages once it is scored. In a Fortran-ordered file a
    batch of rows is a short run in every column; touching those runs through
    a map makes the kernel map whole folios around them, which is nearly the
    whole file, so such files are read instead, one read per class into a
    reused buffer, then transposed into contiguous rows (two batches of memory).

    Parameters
    ----------
    path : str
        A .npy file holding a ``(rows, classes)`` array of float16, float32,
        float64, integer or bool values, in either memory order.

    Raises
    ------
    CommandError
        For a missing file, a file that is not a .npy file or is truncated, an
        array that is not 2-D, or an unsupported dtype.
    """

    def __init__(self, path):
        shape, fortran_order, dtype, offset, file_size = _read_header(path)
        if not _is_supported(dtype):
            raise CommandError(
                f"{path}: unsupported dtype {dtype}; expected float16, float32, float64, "
                "integer or bool logits"
            )
        if len(shape) != 2:
            hint = "; save a single row with shape (1, classes)" if len(shape) == 1 else ""
            raise CommandError(
                f"{path}: expected a 2-D array of logits (rows, classes), got {len(shape)}-D "
                f"shape {shape}{hint}"
            )
        data_bytes = int(np.prod(shape)) * dtype.itemsize
        if file_size < offset + data_bytes:
            raise CommandError(
                f"{path} is truncated: its header promises {data_bytes} bytes of data "
                f"but the file holds {max(file_size - offset, 0)}"
            )
        self.path, self.shape, self.dtype = path, shape, dtype
        self._offset = offset
        # Fortran order: a (classes, batch rows) buffer to read into, and its transpose.
        self._columns = self._rows = None
        if fortran_order and 0 not in shape:
            self._map = None
            self._file = open(path, "rb", buffering=0)
        else:
            self._map = np.lib.format.open_memmap(path, mode="r")
            self._file = None

    @property
    def size(self):
        return self.shape[0] * self.shape[1]

    def rows(self, start, stop):
        """Rows ``start:stop`` as an array, valid until the next call."""
        if self._map is not None:
            return self._map[start:stop]
        count = stop - start
        if self._columns is None or self._columns.shape[1] < count:
            self._columns = np.empty((self.shape[1], count), dtype=self.dtype)
            self._rows = np.empty((count, self.shape[1]), dtype=self.dtype)
        run_bytes = count * self.dtype.itemsize
        for j, column in enumerate(self._columns[:, :count]):
            self._file.seek(self._offset + (j * self.shape[0] + start) * self.dtype.itemsize)
            if self._file.readinto(column) != run_bytes:
                raise CommandError(f"{self.path}: the file shrank while it was read")
        # Handing the kernels contiguous rows costs this one transpose per batch;
        # strided rows would be staged by the library in many small blocks instead.
        np.copyto(self._rows[:count], self._columns[:, :count].T)
        return self._rows[:count]

    def release(self):
        """Drop the pages of the rows read so far from resident memory."""
        if self._map is not None:
            release_pages(self._map)

    def close(self):
        self._map = None
        if self._file is not None:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False


def release_pages(*arrays):
    """Drop the mapped pages of whole memory-mapped arrays from resident memory.

    Safe for read-only and for shared writable maps: written data lives on in
    the file and comes back from it on the next access. A no-op for arrays that
    are not maps, and where the platform has no ``madvise``.
    """
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    for array in arrays:
        mapping = array.base
        if isinstance(mapping, mmap.mmap) and len(mapping):
            mapping.madvise(mmap.MADV_DONTNEED)


@dataclass(frozen=True)
class OutputSpec:
    """One array a command writes: where, its shape and its dtype."""

    path: str
    shape: tuple
    dtype: np.dtype


def check_targets(specs, overwrite):
    """Refuse outputs that exist (without `overwrite`), are directories or clash.

    Checked before any work starts, so a refusal costs nothing and writes nothing.
    """
    seen = set()
    for spec in specs:
        real = os.path.realpath(spec.path)
        if real in seen:
            raise CommandError(f"two outputs name the same file: {spec.path}")
        seen.add(real)
        if os.path.isdir(spec.path):
            raise CommandError(f"output is a directory: {spec.path}")
        if os.path.lexists(spec.path) and not overwrite:
            raise CommandError(f"output exists: {spec.path} (pass --overwrite to replace it)")
        directory = os.path.dirname(spec.path) or "."
        if not os.path.isdir(directory):
            raise CommandError(f"output directory does not exist: {directory}")


def _temporary_name(path):
    """A hidden name beside `path`, so the final rename stays on one file system."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.part")


def _preallocate(path):
    """Reserve the file's blocks now: a full disk is an error here, not a crash later.

    Writing through a map into a sparse file on a full disk kills the process with
    SIGBUS; reserving the space first turns that into a clean ENOSPC.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # no fallocate here: skip
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def _reported_as(action, path):
    """Turn an OSError into a CommandError naming what failed on which file."""
    try:
        yield
    except OSError as exc:
        raise CommandError(f"cannot {action} {path}: {exc.strerror or exc}") from None


class NewFiles:
    """Output .npy files, mapped for writing, that appear under their names only when done.

    Each array is written to a hidden temporary file beside its final path. On
    `commit` the maps are flushed to disk and the files renamed into place; when
    the ``with`` block is left without a commit (an error, Ctrl-C, SIGTERM) the
    temporary files are removed, so a failure never leaves a partial file under
    a final name and never touches a file that was there before.

    Parameters
    ----------
    specs : list of OutputSpec
        The arrays to create.

    Attributes
    ----------
    arrays : list of numpy.memmap
        The writable maps, in the order of `specs`.
    """

    def __init__(self, specs):
        self.specs = list(specs)
        self.arrays = []
        self._temporary = []

    def __enter__(self):
        try:
            for spec in self.specs:
                temporary = _temporary_name(spec.path)
                with _reported_as("create", spec.path):
                    with open(temporary, "xb"):  # created here, so a cleanup may remove it
                        self._temporary.append(temporary)
                    array = np.lib.format.open_memmap(
                        temporary, mode="w+", dtype=spec.dtype, shape=spec.shape
                    )
                    self.arrays.append(array)
                    _preallocate(temporary)
        except BaseException:
            self._discard()
            raise
        return self

    def commit(self):
        """Flush every map to disk, then rename every file to its final name."""
        for spec, array in zip(self.specs, self.arrays):
            with _reported_as("write", spec.path):
                array.flush()
        self.arrays.clear()  # unmap before the rename
        for spec, temporary in zip(self.specs, self._temporary):
            with _reported_as("write", spec.path):
                os.replace(temporary, spec.path)
        self._temporary.clear()

    def __exit__(self, *exc_info):
        self._discard()
        return False

    def _discard(self):
        """Unmap and remove every temporary file not yet renamed into place."""
        self.arrays.clear()
        for temporary in self._temporary:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
        self._temporary.clear()
