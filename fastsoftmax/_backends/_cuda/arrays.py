"""Device arrays as NumPy *address maps*, and the kernel arguments made from them.

A `DeviceView` pairs the object that owns some device memory with a NumPy array
that has the same data pointer, shape, strides and dtype. NumPy then does all
the stride arithmetic (moving the class axis last, merging leading dimensions,
picking a slice) and answers overlap questions with ``np.shares_memory``; none
of that reads an element. On a GPU the address map points at device memory and
must never be read: only its layout is used. In the simulator the device
arrays are host memory, so the map is simply the simulator's array.
"""

import itertools
from dataclasses import dataclass

import numpy as np
from numba import cuda

from ..._layout import _collapse_lead
from . import runtime

if runtime.SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray


class _Interface:
    """Holds an ``__array_interface__`` or ``__cuda_array_interface__`` dict."""

    def __init__(self, name, interface, owner=None):
        setattr(self, name, interface)
        self.owner = owner


@dataclass(frozen=True)
class DeviceView:
    """A strided window on device memory, kept alive by `owner`."""

    address: np.ndarray
    owner: object

    @property
    def shape(self):
        return self.address.shape

    @property
    def dtype(self):
        return self.address.dtype

    @property
    def size(self):
        return self.address.size

    @property
    def ndim(self):
        return self.address.ndim

    def with_address(self, address):
        """The same memory seen through another layout of `address`."""
        return DeviceView(address, self.owner)

    def moveaxis(self, source, destination):
        return self.with_address(np.moveaxis(self.address, source, destination))

    def read(self, index):
        """Copy the single element at `index` to the host."""
        # Ellipsis keeps NumPy from reading: the result is a view, not a scalar.
        element = self.address[tuple(index) + (Ellipsis,)]
        one = np.lib.stride_tricks.as_strided(element, (1,), (element.itemsize,))
        return self.with_address(one).kernel_arg().copy_to_host()[0]

    def kernel_arg(self):
        """A Numba device array for this window (no copy)."""
        if runtime.SIMULATOR:
            return FakeCUDAArray(self.address)
        interface = self.address.__array_interface__
        cai = {
            "shape": self.address.shape,
            "strides": self.address.strides,
            "typestr": self.address.dtype.str,
            "data": (interface["data"][0], not self.address.flags.writeable),
            "version": 3,
        }
        return cuda.as_cuda_array(_Interface("__cuda_array_interface__", cai, self.owner), sync=False)


def is_device_array(obj):
    """True for Numba device arrays and any ``__cuda_array_interface__`` object."""
    if isinstance(obj, np.ndarray):
        return False
    if runtime.SIMULATOR and isinstance(obj, FakeCUDAArray):
        return True
    return hasattr(obj, "__cuda_array_interface__")


def view_of(obj):
    """The `DeviceView` of a device array, sharing its memory.

    A foreign array's ``__cuda_array_interface__`` is read as it is. When it
    names a stream other than the legacy default one (``1``, on which the
    kernels run anyway, in order), that stream is synchronised first, as the
    interface asks of a consumer.
    """
    if runtime.SIMULATOR and isinstance(obj, FakeCUDAArray):
        return DeviceView(np.asarray(obj), obj)
    cai = obj.__cuda_array_interface__
    if cai.get("mask") is not None:
        raise TypeError("masked GPU arrays are not supported; fill them first")
    stream = cai.get("stream")
    if stream not in (None, 1) and not getattr(type(obj), "__cuda_ndarray__", False):
        cuda.external_stream(stream).synchronize()
    strides = cai.get("strides")
    address = np.asarray(
        _Interface(
            "__array_interface__",
            {
                "shape": tuple(cai["shape"]),
                "strides": None if strides is None else tuple(strides),
                "typestr": cai["typestr"],
                "data": tuple(cai["data"]),
                "version": 3,
            },
        )
    )
    return DeviceView(address, obj)


def empty(shape, dtype, like=None):
    """A new device array, laid out like the view `like` when given.

    Like ``np.empty_like``: the dimensions keep the order of `like`'s strides
    (largest first), so a transposed input gives a transposed result.
    """
    shape = tuple(shape)
    dtype = np.dtype(dtype)
    order = tuple(range(len(shape)))
    if like is not None and like.shape == shape:
        strides = like.address.strides
        order = tuple(sorted(order, key=lambda d: -abs(strides[d])))
    view = view_of(cuda.device_array(tuple(shape[d] for d in order), dtype=dtype))
    return view.with_address(view.address.transpose(np.argsort(order)))


def upload(host, dtype=None):
    """A C-contiguous device copy of the host array `host` (native byte order)."""
    dtype = host.dtype if dtype is None else np.dtype(dtype)
    # np.asarray keeps a 0-d array 0-d (np.ascontiguousarray would not).
    return view_of(cuda.to_device(np.asarray(host, dtype=dtype.newbyteorder("="), order="C")))


def download(view, host_out):
    """Copy the C-contiguous device `view` into the host array `host_out`."""
    host = view.kernel_arg().copy_to_host()
    np.copyto(host_out, host.reshape(view.shape), casting="unsafe")


def shares_memory(a, b):
    """True when two views address any common byte (exact, layout only)."""
    try:
        return np.shares_memory(a.address, b.address, max_work=10_000)
    except np.exceptions.TooHardError:
        return True


def row_launches(views, lead):
    """Split row-wise operands into launches whose leading shape has two dimensions.

    `views` share the leading shape `lead` (the class axis, if any, is last).
    Leading dimensions whose strides agree in every operand are merged; when
    more than two remain (layouts that no reshape can flatten), each index of
    the extra outer dimensions becomes one launch, so no operand is ever
    copied. Yields lists of kernel arguments, one per view, each with exactly
    two leading dimensions.
    """
    new_lead, addresses = _collapse_lead(lead, [v.address for v in views])
    extra = len(new_lead) - 2
    if extra < 0:
        addresses = [a[(np.newaxis,) * -extra] for a in addresses]
        extra = 0
    for index in itertools.product(*(range(n) for n in new_lead[:extra])):
        yield [v.with_address(a[index]).kernel_arg() for v, a in zip(views, addresses)]
