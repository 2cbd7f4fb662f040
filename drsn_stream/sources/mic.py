"""``mic`` / ``mic:DEVICE``: a sound card input through PortAudio (python-sounddevice).

The PortAudio callback only copies each block into a preallocated ring buffer and counts
overflows; the iterating thread cuts whatever has arrived into Frames (the DSP re-chunks them).
Capture times come from PortAudio's ADC timestamps mapped to the wall clock when the driver
provides them, else from the callback's arrival time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from drsn_stream.errors import ConfigError, SourceError
from drsn_stream.sources.base import Source, opt_positive
from drsn_stream.types import Frame, channel_ids

COMMON_RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000)
POLL_S = 0.005
# No block from PortAudio for this long while its stream runs: the device is gone (a USB card
# pulled, a sound server stopped). PortAudio says nothing then: the stream stays "active" and
# its callback is simply never called again.
STALL_S = 2.0
START_GRACE_S = 3.0  # more for the first block
REOPEN_S = (1.0, 10.0)  # first and longest wait between tries to open a lost device again
# A try runs in a child first: a failed open makes PortAudio and ALSA print to stderr (over the
# dashboard) and cannot be silenced in this process; only a device the child opened is opened here.
PROBE = (
    "import sys, sounddevice as sd\n"
    "s = sd.InputStream(device=int(sys.argv[1]), samplerate=float(sys.argv[2]), channels=int(sys.argv[3]),"
    " dtype='float32')\n"
    "s.start(); s.stop(); s.close()\n"
)
PORTAUDIO_MISSING = "PortAudio library not found: install libportaudio2 (apt-get install libportaudio2)"


def import_sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into a SourceError that says what to do."""
    try:
        import sounddevice
    except OSError as exc:
        raise SourceError(PORTAUDIO_MISSING) from exc
    return sounddevice


def input_devices(sd: Any | None = None) -> list[dict[str, Any]]:
    """Input-capable devices: ``[{"index", "name", "hostapi", "channels", "default_rate", "default"}]``."""
    sd = sd or import_sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise SourceError(f"PortAudio cannot list devices: {exc}") from exc
    out = []
    for d in devices:
        if d["max_input_channels"] > 0:
            out.append({
                "index": d["index"],
                "name": d["name"],
                "hostapi": hostapis[d["hostapi"]]["name"],
                "channels": d["max_input_channels"],
                "default_rate": d["default_samplerate"],
                "default": d["index"] == default_in,
            })
    return out


def _device_list_text(devs: list[dict[str, Any]]) -> str:
    if not devs:
        return "no input devices at all (no sound card, or ALSA/PulseAudio not reachable)"
    return "; ".join(f"[{d['index']}] {d['name']} ({d['channels']} ch, {d['default_rate']:g} Hz)" for d in devs)


def accepted_rates(sd: Any, device: int, channels: int) -> list[int]:
    """Which of ``COMMON_RATES`` the device opens with ``channels`` float32 channels."""
    ok = []
    for rate in COMMON_RATES:
        try:
            sd.check_input_settings(device=device, samplerate=rate, channels=channels, dtype="float32")
            ok.append(rate)
        except Exception:  # noqa: BLE001 - PortAudio reports refusals as several exception types
            continue
    return ok


class MicSource(Source):
    """``mic[:DEVICE][?rate=HZ&channels=N&blocksize=N&chunk=N&buffer=S&stream=ID]``.

    DEVICE is an index or (part of) a name as ``drsn-stream devices`` lists them; without it the
    default input. Without ``rate`` the device's default rate is used (resampling happens in the
    DSP, which is more robust than asking a card for a rate it dislikes).
    """

    kind = "mic"
    OPTIONS = {
        "rate": (opt_positive(float, 1e6), None, "sample rate in Hz (default: the device's default)"),
        "channels": (opt_positive(int, 256), 1, "input channels"),
        "blocksize": (int, 0, "PortAudio block size in frames (0 = PortAudio chooses, most robust)"),
        "chunk": (int, 0, "at most this many samples per Frame (0 = whatever has arrived)"),
        "buffer": (opt_positive(float), 10.0, "ring buffer length in seconds"),
        "stream": (str, "", "stream id (default: mic, or mic/DEVICE)"),
    }

    def __init__(self, target: str = "", **options: Any) -> None:
        super().__init__(target, **options)
        self.device_spec: int | str | None = int(target) if target.isdigit() else (target or None)
        self.stream_id = self.options["stream"] or (f"mic/{target}" if target else "mic")
        self._streams = list(channel_ids(self.stream_id, self.options["channels"]))  # each channel is monitored
        self._pa_stream: Any = None

    def _resolve_device(self, sd: Any) -> dict[str, Any]:
        devs = input_devices(sd)
        if not devs:
            raise SourceError("no input sound device found: " + _device_list_text(devs) +
                              "; connect one, or use --source sim or file:PATH")
        try:
            info = sd.query_devices(self.device_spec, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            raise SourceError(f"input device {self.device_spec if self.device_spec is not None else '(default)'}"
                              f" not usable ({exc}); inputs: {_device_list_text(devs)}") from exc
        return dict(info)

    def check(self) -> None:
        self._settings(import_sounddevice())

    def _settings(self, sd: Any) -> tuple[dict[str, Any], int, int, float]:
        """(device info, device index, channels, rate) after checking the device takes them."""
        info = self._resolve_device(sd)
        device = info["index"]
        channels = self.options["channels"]
        if channels > info["max_input_channels"]:
            raise ConfigError(f"device [{device}] {info['name']} has {info['max_input_channels']} input "
                              f"channel(s); asked for channels={channels}")
        rate = float(self.options["rate"] or info["default_samplerate"])
        try:
            sd.check_input_settings(device=device, samplerate=rate, channels=channels, dtype="float32")
        except Exception as exc:  # noqa: BLE001 - PortAudioError or ValueError depending on the backend
            ok = accepted_rates(sd, device, channels)
            raise SourceError(f"device [{device}] {info['name']} refuses {rate:g} Hz ({exc}); it accepts "
                              f"{', '.join(map(str, ok)) or 'none of ' + str(COMMON_RATES)} Hz - leave rate "
                              "unset to use its default and let the DSP resample") from exc
        return info, device, channels, rate

    def _open(self) -> None:
        sd = import_sounddevice()
        info, device, channels, rate = self._settings(sd)
        self.rate = rate
        self.device_name = info["name"]
        cap = max(int(self.options["buffer"] * rate), 4096)
        self._ring = np.zeros((cap, channels), dtype=np.float32)
        self._cap = cap
        self._written = 0  # total frames the callback has stored; published after the copy
        self._overflows = 0  # PortAudio input overflows (samples the driver lost)
        self._anchor = (0, time.time())  # (sample index, wall-clock capture time of that sample)
        self._device = (device, rate, channels)
        # of the latest callback (a long silence is a lost device); a card may take a few seconds
        # to deliver its first block (Bluetooth headsets do)
        self._last_block = time.monotonic() + START_GRACE_S
        try:
            self._pa_stream = sd.InputStream(
                device=device, samplerate=rate, channels=channels, dtype="float32",
                blocksize=self.options["blocksize"], callback=self._callback,
            )
            self._pa_stream.start()
        except sd.PortAudioError as exc:
            self._pa_stream = None
            raise SourceError(f"cannot open input device [{device}] {info['name']} at {rate:g} Hz: {exc}") from exc

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's real-time thread. Contract: copy into the preallocated ring, count
        overflows, record one timestamp - no allocation of buffers, no I/O, no locks, no logging.
        ``_written`` is advanced only after the copy, so the reader never sees half a block."""
        w = self._written
        i = w % self._cap
        first = min(frames, self._cap - i)
        self._ring[i : i + first] = indata[:first]
        if first < frames:
            self._ring[: frames - first] = indata[first:]
        if status.input_overflow:
            self._overflows += 1
        adc = time_info.inputBufferAdcTime
        now = time.time()
        t_block = adc + (now - time_info.currentTime) if adc > 0 else now - frames / self.rate
        self._anchor = (w, t_block)
        self._written = w + frames
        self._last_block = time.monotonic()

    def _frames(self) -> Iterator[Frame]:
        read, seq, reported, lost = 0, 0, 0, 0
        chunk = self.options["chunk"]
        stall_s = max(STALL_S, 4 * self.options["blocksize"] / self.rate)
        while not self.closed:
            written, cap = self._written, self._cap
            if written - read > cap:  # reader fell a whole ring behind: those samples are gone
                read = written - cap // 2
                lost += 1
            n = written - read
            if n <= 0:
                if time.monotonic() - self._last_block > stall_s:
                    if not self._reopen(stall_s):
                        return  # closed while the device was away
                    read, reported = 0, 0
                    lost += 1  # a new ring: the next frame says samples were lost before it
                    continue
                self._idle()
                self._closed.wait(POLL_S)
                continue
            if chunk > 0:
                n = min(n, chunk)
            idx = (read + np.arange(n)) % cap
            data = self._ring[idx]
            if self._written - read > cap:  # overwritten while copying: drop it, count it
                self.stats.overflow(self.stream_id)
                continue
            anchor_i, anchor_t = self._anchor
            t_first = anchor_t + (read - anchor_i) / self.rate
            overflows = self._overflows
            yield Frame(self.stream_id, seq, t_first, self.rate, data, overflow=overflows - reported + lost)
            reported, lost = overflows, 0
            read += n
            seq += 1

    def _reopen(self, stall_s: float) -> bool:
        """The device stopped: say so, then try to open it again, waiting longer after each
        failure, until it opens (True, said too) or the source is closed (False)."""
        name = self.device_name
        self.notes.append((self.stream_id, f"input device {name} stopped delivering samples (none for "
                                            f"{stall_s:g} s): lost; trying to open it again"))
        try:
            self._close()  # forgets the stream whether or not it stops
        except Exception:  # noqa: BLE001 - a device that is gone may refuse to stop too
            pass
        wait = REOPEN_S[0]
        self._idle()
        while not self._closed.wait(wait):
            wait = min(2 * wait, REOPEN_S[1])
            if not self._opens_in_a_child():
                continue
            try:
                self._open()
            except Exception:  # noqa: BLE001 - SourceError, ConfigError or PortAudio's own: try again later
                self._pa_stream = None  # _open forgets it on PortAudio's errors only
                continue
            self.notes.append((self.stream_id, f"input device {name} is back: capturing again"))
            return True
        return False

    def _opens_in_a_child(self) -> bool:
        device, rate, channels = self._device
        try:
            done = subprocess.run([sys.executable, "-c", PROBE, str(device), repr(rate), str(channels)],
                                  capture_output=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def _close(self) -> None:
        if self._pa_stream is not None:
            try:
                self._pa_stream.stop()
                self._pa_stream.close()
            finally:
                self._pa_stream = None
