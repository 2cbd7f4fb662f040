"""drsn-stream: live machine-condition and sound monitoring with Deep Residual Shrinkage Networks."""

from drsn_stream.errors import DrsnStreamError

__version__ = "0.1.0"
__all__ = ["DrsnStreamError", "__version__"]
