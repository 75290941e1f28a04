"""Numba CUDA kernels of the ``cuda`` backend, one small module per job.

``settings`` holds the launch sizes (read by host code on every call),
``runtime`` what differs between a GPU and the CUDA simulator, ``arrays`` the
device views, ``plan`` how rows map onto threads, ``reduce`` and ``rowmath`` the
device-side building blocks, and ``forward``, ``backward``, ``cross_entropy``,
``targets``, ``topk`` and ``sums`` the kernels themselves.
"""
