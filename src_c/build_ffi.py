"""cffi build script of the C backend (out-of-line API mode).

``setup.py`` names ``src_c/build_ffi.py:ffibuilder`` in ``cffi_modules``, so
``pip install .`` (from a checkout, an sdist or as an editable install)
compiles ``fastsoftmax._fastsoftmax_c`` from the sources beside this file.
Paths are resolved from ``__file__``; the cdef is ``fastsoftmax.h`` itself with
its preprocessor lines removed, so the header stays the one declaration of the
interface.

The extension is optional: without a working C compiler the install still
succeeds and ``fastsoftmax.backends()`` reports the C backend unavailable.
Flags are portable (no ``-march=native``); the kernels reach AVX2 and AVX-512
through per-function target options and runtime dispatch instead.
"""

import os
import pathlib
import sys
import sysconfig

import cffi

HERE = pathlib.Path(__file__).resolve().parent
HEADER = HERE / "fastsoftmax.h"
SOURCES = ["fs_dispatch.c", "fs_isa_baseline.c", "fs_isa_avx2.c", "fs_isa_avx512.c"]
DEPENDS = [
    "fastsoftmax.h",
    "fs_internal.h",
    "fs_instantiate.h",
    "fs_kernels.h",
    "fs_math.h",
    "fs_stream.h",
    "fs_transpose.h",
]

# Optimisation without -ffast-math: the kernels' NaN/inf handling needs IEEE
# semantics; contraction to FMA, no errno and no trapping only drop side
# effects. Loops that fill or copy a few lanes must stay inline loops rather
# than become memset/memcpy calls. Python's own CFLAGS, which come first,
# hold -fwrapv: with it the kernels' index arithmetic may wrap, which costs
# GCC its address analysis (float32 log_softmax over 64 x 256000, 2 threads,
# NumPy's layout: 0.27 against 0.18 ns/element); the kernels never overflow
# a signed integer (the C tests run under -fsanitize=undefined), so it is
# turned off again.
GNU_FLAGS = [
    "-O3",
    "-fno-wrapv",
    "-ffp-contract=fast",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fno-tree-loop-distribute-patterns",
]
MSVC_FLAGS = ["/O2"]

# GCC skips, on x86, the instruction scheduling that comes before register
# allocation: a loop's exponentials come out one after the other, each a
# chain of a dozen dependent multiply-adds, and a core whose floating-point
# scheduler holds a few dozen operations waits on their latencies. Scheduled
# with register pressure in view, they interleave: AVX2, 2 threads, float32,
# median of 4 alternating processes, softmax 16384 x 1000 0.760 -> 0.683
# ns/element, 65536 x 128 0.858 -> 0.786, log_softmax 16384 x 1000 0.800 ->
# 0.738, cross-entropy 16384 x 1000 0.980 -> 0.930. Clang schedules
# already, and warns of these flags.
GCC_SCHEDULING_FLAGS = ["-fschedule-insns", "-fsched-pressure"]


def compile_flags():
    """The flags of the kernels' build with this platform's compiler."""
    if sys.platform == "win32":
        return MSVC_FLAGS
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or ""
    return GNU_FLAGS if "clang" in compiler else GNU_FLAGS + GCC_SCHEDULING_FLAGS


def cdef_source(header_text):
    """The header as cffi's cdef takes it: without preprocessor lines."""
    return "\n".join(
        line for line in header_text.splitlines() if not line.lstrip().startswith("#")
    )


def _relative(path):
    """`path` relative to the working directory when below it (setuptools wants that)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def make_builder():
    builder = cffi.FFI()
    builder.cdef(cdef_source(HEADER.read_text()))
    builder.set_source(
        "fastsoftmax._fastsoftmax_c",
        '#include "fastsoftmax.h"',
        sources=[_relative(HERE / name) for name in SOURCES],
        depends=[_relative(HERE / name) for name in DEPENDS],
        include_dirs=[_relative(HERE)],
        extra_compile_args=compile_flags(),
        libraries=[] if sys.platform == "win32" else ["m"],
        optional=True,
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
