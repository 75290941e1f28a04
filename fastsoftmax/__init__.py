"""Row-wise softmax, log-softmax, logsumexp, their gradients and fused cross-entropy.

Importing this package compiles nothing and loads no backend: each backend is
imported the first time a call needs it.
"""

from ._backward import log_softmax_backward, softmax_backward
from ._cross_entropy import cross_entropy
from ._dispatch import BackendInfo, backends
from ._softmax import log_softmax, logsumexp, softmax, softmax_topk
from ._threads import get_num_threads, set_num_threads
from ._version import __version__

__all__ = [
    "BackendInfo",
    "__version__",
    "backends",
    "cross_entropy",
    "get_num_threads",
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "set_num_threads",
    "softmax",
    "softmax_backward",
    "softmax_topk",
]
