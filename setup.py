"""Build script.

The pure-Python packages install everywhere. The native kernels in csrc/ are compiled just in time on first
use (torch.utils.cpp_extension + ninja), so a CPU-only machine needs nothing more than `pip install -e .`.
"""
from setuptools import setup

setup()
