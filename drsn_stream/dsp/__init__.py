"""Per-stream signal processing: resampling, windowing, normalization, noise."""

from drsn_stream.dsp.noise import NOISE_KINDS, add_noise, make_noise, snr_db
from drsn_stream.dsp.normalize import BatchNormalizer, normalize
from drsn_stream.dsp.resample import StreamingResampler
from drsn_stream.dsp.stream import FrameDSP, StreamDSP
from drsn_stream.dsp.window import Windower

__all__ = [
    "BatchNormalizer",
    "NOISE_KINDS",
    "FrameDSP",
    "StreamDSP",
    "StreamingResampler",
    "Windower",
    "add_noise",
    "make_noise",
    "normalize",
    "snr_db",
]
