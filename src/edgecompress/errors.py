"""One exception family, so the CLI and components can turn any of them into a clear message."""


class EdgeCompressError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class DatasetError(EdgeCompressError):
    """A dataset is missing, unreadable, corrupt or malformed."""


class ModelError(EdgeCompressError):
    """A model is missing, corrupt, or does not fit the data."""


class ExportError(ModelError):
    """ONNX export failed or its output disagrees with torch."""


class ConfigError(EdgeCompressError):
    """A parameter is out of range or names something that does not exist."""


class TrackingError(EdgeCompressError):
    """The MLflow tracking server cannot be reached or refused a request."""


class BenchmarkError(EdgeCompressError):
    """A benchmark could not run or produced no usable result."""


class PairingUnsupported(BenchmarkError):
    """The farm controller does not take paired jobs (a version older than them)."""
