"""On-disk caching of the kernels, invalidated by any change to their sources.

Numba checks a cached function against the source file that defines it, but
a kernel also carries the compiled code of every helper it calls, from other
files: an upgrade that changed only a helper would keep running stale code.
Here each kernel's cache entries are stamped with a digest of every module of
this package as well. Locations are Numba's own: ``NUMBA_CACHE_DIR`` when set,
else next to the sources when writable, else Numba's per-user directory.
"""

import hashlib
import pathlib

from numba.core import caching


def _sources_digest():
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


SOURCES_DIGEST = _sources_digest()


class _PackageStamp:
    """Locator mixin: the function's own source stamp plus the package digest."""

    def get_source_stamp(self):
        return (super().get_source_stamp(), SOURCES_DIGEST)


class _KernelCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [
        type(locator.__name__, (_PackageStamp, locator), {})
        for locator in caching.CompileResultCacheImpl._locator_classes
    ]


class KernelCache(caching.FunctionCache):
    """A Numba function cache whose entries expire with this package's sources."""

    _impl_class = _KernelCacheImpl


def enable(dispatcher):
    """Cache `dispatcher` on disk, keyed to this package's sources; returns it."""
    dispatcher._cache = KernelCache(dispatcher.py_func)
    return dispatcher
