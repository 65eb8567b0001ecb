"""edgecompress: compress PyTorch models for edge devices and measure the result on device benchmarks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgecompress")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
