"""Build script.

The pure-Python packages install everywhere. The native kernels in csrc/ are compiled just in time on first
use (torch.utils.cpp_extension + ninja), so a CPU-only machine needs nothing more than `pip install -e .`.
A wheel or a non-editable install carries csrc/ inside the pna_kernels package, so the kernels build there too.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithKernelSources(build_py):
    """Copy csrc/ (the C++ and CUDA sources) into the built pna_kernels package."""

    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "csrc"
        target = Path(self.build_lib) / "pna_kernels" / "csrc"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.o", "*.so"))


setup(cmdclass={"build_py": BuildPyWithKernelSources})
