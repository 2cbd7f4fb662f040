"""Spoken digits: FSDD and TTS data, augmentation, training of ``digits-fsdd``, the word detector.

The label set and the stream geometry of the shipped model are fixed here, so training, the
detector, the simulator and the tests agree on them.
"""

from __future__ import annotations

DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
BACKGROUND: tuple[str, ...] = ("_silence_", "_noise_", "_unknown_")
LABELS: tuple[str, ...] = DIGITS + BACKGROUND
SAMPLE_RATE = 8000  # Hz, FSDD's own rate
WINDOW = 8000  # samples: 1.0 s
HOP = 800  # samples: 100 ms
# rms normalization with a floor about -46 dBFS: a quiet room stays quiet (its window is scaled
# down, not up to unit level), while any voice above the floor reaches the model at unit RMS.
RMS_FLOOR = 0.005
NORMALIZATION = {"kind": "rms", "floor": RMS_FLOOR}

CREDITS = (
    "Free Spoken Digit Dataset (Jakobovski et al., github.com/Jakobovski/free-spoken-digit-dataset, "
    "CC BY-SA 4.0); background noise from Google Speech Commands _background_noise_ (Warden 2018, CC BY 4.0)"
)

__all__ = ["BACKGROUND", "CREDITS", "DIGITS", "HOP", "LABELS", "NORMALIZATION", "RMS_FLOOR", "SAMPLE_RATE", "WINDOW"]
