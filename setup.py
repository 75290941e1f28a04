from setuptools import setup

setup(cffi_modules=["src_c/build_ffi.py:ffibuilder"])
