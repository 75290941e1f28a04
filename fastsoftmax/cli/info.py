"""``fastsoftmax info``: what this installation can run, and with what.

Reports the versions, every backend with its availability (and why not), the
thread count and Numba's threading layer, the CPU's SIMD features and where
Numba caches compiled kernels. It imports neither PyTorch nor SciPy (though
Numba itself imports SciPy when it is installed).
"""

import hashlib
import importlib.util
import os
import platform
import sys

import numpy as np

import fastsoftmax

# SIMD extensions that matter to the kernels, per CPU family, as Linux names them.
X86_SIMD = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_bf16",
    "avx512_fp16",
)
ARM_SIMD = ("asimd", "asimdhp", "sve", "sve2")
# LLVM's names for the few that it spells differently.
LLVM_NAMES = {
    "sse4.2": "sse4_2",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "neon": "asimd",
    "fullfp16": "asimdhp",
}
# Where the Numba kernels are defined: the first of these packages that exists.
KERNEL_PACKAGES = ("fastsoftmax._backends._numba", "fastsoftmax._backends")


def add_parser(commands):
    """Register ``info``."""
    parser = commands.add_parser(
        "info",
        help="versions, backends, threads, SIMD features, Numba cache",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.set_defaults(run=run)


def _numba():
    """The numba module, or None when it cannot be imported."""
    try:
        import numba
    except ImportError:
        return None
    return numba


def _first_cpu():
    """The fields of the first processor in /proc/cpuinfo; empty where there is none."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _llvm_cpu():
    """``(cpu name, feature names)`` of the host as LLVM sees it, or ``(None, set())``."""
    try:
        import llvmlite.binding as llvm
    except ImportError:
        return None, set()
    features = llvm.get_host_cpu_features()
    names = {LLVM_NAMES.get(name, name) for name, on in features.items() if on}
    return llvm.get_host_cpu_name(), names


def cpu_report():
    """``(model, present, absent, source)`` for this CPU's family of SIMD extensions.

    Flags come from /proc/cpuinfo on Linux, otherwise from LLVM's view of the host.
    """
    cpu = _first_cpu()
    llvm_name, llvm_flags = _llvm_cpu()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    source = "/proc/cpuinfo"
    if not flags:
        flags, source = llvm_flags, "LLVM host features"
    model = cpu.get("model name") or platform.processor() or platform.machine()
    if llvm_name:
        model = f"{model} (LLVM: {llvm_name})"
    family = ARM_SIMD if platform.machine().lower() in ("arm64", "aarch64") else X86_SIMD
    present = [name for name in family if name in flags]
    absent = [name for name in family if name not in flags]
    return model, present, absent, source


def threading_layer(numba):
    """``(layer, how)``: the Numba threading layer and how it was found.

    Numba picks its layer when it first runs a parallel function. When nothing
    has run yet, a tiny parallel function (compiled once, then cached on disk)
    runs so that the layer reported is the one Numba really loads here.
    """
    configured = f"configured: {numba.config.THREADING_LAYER}"
    try:
        return numba.threading_layer(), configured
    except ValueError:
        pass
    try:
        from ._parallel_probe import parallel_sum

        parallel_sum(np.arange(4.0))
        return numba.threading_layer(), f"loaded by a tiny parallel call; {configured}"
    except Exception as exc:  # a broken layer is reported, not raised
        return "unavailable", f"{type(exc).__name__}: {exc}; {configured}"


def _kernel_directory():
    """The directory of the Numba kernels' source files (their cache is keyed on it)."""
    for package in KERNEL_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            return os.path.dirname(os.path.abspath(spec.origin))
    raise ImportError("fastsoftmax._backends is missing")


def _writable_directory(path):
    """True when `path` is, or could be created as, a writable directory."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.path.isdir(path) and os.access(path, os.W_OK)


def numba_cache_dir(numba):
    """``(directory, why)``: where Numba caches the compiled kernels of this package.

    Numba's own resolution for a source directory ``src``: ``NUMBA_CACHE_DIR``
    when set, else ``src/__pycache__`` when writable, else the user-wide cache;
    outside ``src`` the subdirectory is ``<name of src>_<sha1 of its path>``.
    """
    source = _kernel_directory()
    digest = hashlib.sha1(source.encode()).hexdigest()
    subdirectory = f"{os.path.basename(source)}_{digest}"
    if numba.config.CACHE_DIR:
        return os.path.join(numba.config.CACHE_DIR, subdirectory), "NUMBA_CACHE_DIR"
    in_tree = os.path.join(source, "__pycache__")
    if _writable_directory(in_tree):
        return in_tree, "beside the kernel sources"
    from numba.misc.appdirs import AppDirs

    user_wide = AppDirs(appname="numba", appauthor=False).user_cache_dir
    return os.path.join(user_wide, subdirectory), "user-wide: the package is not writable"


def _lines():
    numba = _numba()
    yield f"fastsoftmax {fastsoftmax.__version__}"
    yield (
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__ if numba else 'not installed'}, "
        f"{platform.system()} {platform.machine()}"
    )
    yield "backends:"
    for name, entry in fastsoftmax.backends().items():
        state = "available" if entry.available else "unavailable"
        detail = entry.version if entry.available else entry.reason
        yield f"  {name:<15} {state:<12} {detail or ''}".rstrip()
    yield f"threads: {fastsoftmax.get_num_threads()} (fastsoftmax.get_num_threads())"
    if numba is not None:
        yield f"numba thread pool: {numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)"
        layer, how = threading_layer(numba)
        yield f"threading layer: {layer} ({how})"
    model, present, absent, source = cpu_report()
    missing = f"; absent: {' '.join(absent)}" if absent else ""
    yield f"cpu: {model}"
    yield f"simd: {' '.join(present) or 'none found'}{missing} (from {source})"
    if numba is not None:
        directory, why = numba_cache_dir(numba)
        yield f"numba cache: {directory} ({why})"


def run(args):
    """Print the report; returns 0."""
    for line in _lines():
        print(line)
    sys.stdout.flush()
    return 0
