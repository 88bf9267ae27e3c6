"""Build hook for sparsearch's compiled parts (sparse kernels live under workers/runtime).

Metadata is in pyproject.toml; this file only declares C extensions, which setuptools compiles
on install with the local compiler (never fetched prebuilt).
"""

from setuptools import setup

ext_modules: list = []

setup(ext_modules=ext_modules)
