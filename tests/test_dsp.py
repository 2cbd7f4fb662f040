"""Per-stream DSP on real CWRU recordings: chunk invariance, resampling, normalization, noise."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
from helpers import FixedKernels
from scipy.signal import resample_poly, welch

from drsn_stream.dsp import StreamDSP, StreamingResampler, add_noise, make_noise, normalize, snr_db
from drsn_stream.errors import ConfigError
from drsn_stream.types import Frame, Window

normalize_mod = importlib.import_module("drsn_stream.dsp.normalize")  # the package's ``normalize`` is the function
T0 = 1_800_000_000.0  # an arbitrary wall-clock start for synthetic frames


def _de(data_dir, name: str) -> np.ndarray:
    mat = scipy.io.loadmat(data_dir / "cwru" / name)
    key = next(k for k in mat if k.endswith("_DE_time"))
    return np.asarray(mat[key], dtype=np.float32).reshape(-1)


@pytest.fixture(scope="module")
def inner(data_dir) -> np.ndarray:
    return _de(data_dir, "12k_Drive_End_IR007_0_105.mat")


@pytest.fixture(scope="module")
def normal48(data_dir) -> np.ndarray:
    return _de(data_dir, "normal_0_97.mat")


def _meta(**kw):
    base = {"sample_rate": 12000, "window": 2048, "hop": 512, "normalization": {"kind": "zscore"}}
    base.update(kw)
    return SimpleNamespace(**base)


def _feed(x: np.ndarray, rate: float, chunk: int, meta, *, stream: str = "s", hop=None):
    dsp = StreamDSP(meta, hop=hop)
    out = []
    for seq, a in enumerate(range(0, x.size, chunk)):
        block = x[a : a + chunk, None]
        out += dsp.push(Frame(stream, seq, T0 + a / rate, rate, block))
    return out, dsp


def _assert_same(a, b):
    n = min(len(a), len(b))
    assert n > 0
    for wa, wb in zip(a[:n], b[:n]):
        assert wa.index == wb.index
        assert np.array_equal(wa.data, wb.data)
        assert wa.level == wb.level
        assert wa.t_last == pytest.approx(wb.t_last, abs=1e-6)


def test_chunk_invariance_without_resampling(inner):
    meta = _meta()
    big, _ = _feed(inner, 12000, 4096, meta)
    mid, _ = _feed(inner, 12000, 333, meta)
    one, _ = _feed(inner[:24000], 12000, 1, meta)
    assert len(big) == len(mid) == (inner.size - 2048) // 512 + 1
    _assert_same(big, mid)
    _assert_same(one, mid)
    assert len(one) == (24000 - 2048) // 512 + 1


def test_chunk_invariance_through_48k_to_12k_resampler(normal48):
    meta = _meta()
    big, _ = _feed(normal48, 48000, 4096, meta)
    mid, _ = _feed(normal48, 48000, 333, meta)
    one, _ = _feed(normal48[:48000], 48000, 1, meta)
    assert len(big) > 100 and len(one) >= 15
    _assert_same(big, mid)
    _assert_same(one, mid)


def test_windows_match_offline_resampling_and_zscore(normal48):
    """What the live path feeds the model equals the offline recipe trainers use."""
    meta = _meta(hop=2048)
    wins, _ = _feed(normal48, 48000, 4096, meta)
    offline = resample_poly(normal48.astype(np.float64), 1, 4)
    k = 10  # well inside the signal: no edge effects on either side
    ref = offline[k * 2048 : (k + 1) * 2048]
    ref = (ref - ref.mean()) / (ref.std() + 1e-8)
    np.testing.assert_allclose(wins[k].data, ref, atol=1e-5)
    assert wins[k].level == pytest.approx(np.std(offline[k * 2048 : (k + 1) * 2048]), rel=1e-5)  # about its mean


@pytest.mark.parametrize("up,down", [(1, 4), (2, 1), (160, 441), (441, 160)])
def test_the_resampling_filter_is_the_one_scipy_designs(up, down):
    from scipy.signal import firwin

    from drsn_stream.dsp.resample import design_filter

    m = max(up, down)
    ref = firwin(20 * m + 1, 1.0 / m, window=("kaiser", 5.0)) * up
    np.testing.assert_allclose(design_filter(up, down), ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("rates", [(48000, 12000), (8000, 16000), (44100, 16000)])
def test_streaming_resampler_equals_resample_poly(inner, rates):
    r = StreamingResampler(*rates)
    x = inner[:30000].astype(np.float64)
    y = np.concatenate([r.process(x[a : a + 1000]) for a in range(0, x.size, 1000)])
    ref = resample_poly(x, r.up, r.down, window=("kaiser", 5.0))
    assert y.size > 0.99 * ref.size
    np.testing.assert_allclose(y, ref[: y.size], atol=1e-9)


def test_t_last_is_capture_time_of_last_sample(normal48):
    wins, _ = _feed(normal48[:96000], 48000, 1000, _meta(window=1200, hop=600))
    for w in wins[:5]:
        # Output sample k of the 12 kHz stream sits at input time k / 12000 s.
        assert w.t_last == pytest.approx(T0 + (w.index * 600 + 1199) / 12000.0, abs=1e-6)


def test_nonfinite_samples_are_zeroed_and_counted(inner):
    x = inner[:8192].copy()
    x[[10, 500, 4000]] = [np.nan, np.inf, -np.inf]
    wins, dsp = _feed(x, 12000, 1000, _meta())
    assert dsp.nonfinite == 3 and dsp.counters()["dsp.nonfinite"] == 3
    assert all(np.isfinite(w.data).all() and np.isfinite(w.level) for w in wins)


def test_channel_choice_and_rate_change():
    rng = np.random.default_rng(0)
    two = rng.standard_normal((4096, 2)).astype(np.float32)
    d0, d1 = StreamDSP(_meta(), channel=0), StreamDSP(_meta(), channel=1)
    w0 = d0.push(Frame("a", 0, T0, 12000, two))
    w1 = d1.push(Frame("a", 0, T0, 12000, two))
    assert np.array_equal(w0[0].data, normalize(two[:2048, 0], {"kind": "zscore"}))
    assert np.array_equal(w1[0].data, normalize(two[:2048, 1], {"kind": "zscore"}))
    with pytest.raises(ConfigError, match="channel 2 does not exist"):
        StreamDSP(_meta(), channel=2).push(Frame("a", 0, T0, 12000, two))
    d0.push(Frame("a", 1, T0 + 1, 48000, two))
    assert d0.rate_changes == 1


@pytest.mark.parametrize("path", ["compiled", "kernel-as-python"])
def test_the_zscore_kernel_normalizes_as_the_numpy_steps_do(path, inner, monkeypatch):
    # the compiled z-score (where numba is) against the numpy steps it replaces, on real CWRU
    # windows, a constant one, int16-sized ones, a window of NaN: every sample within one float32
    # ulp (the sums' terms are added in another order), the levels within 1e-12, and a window
    # alone as inside a batch
    if path == "compiled" and normalize_mod._kernels.get() is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(4)
    w = np.concatenate([inner[: 32 * 2048].reshape(32, 2048), np.full((1, 2048), 3.5, np.float32),
                        rng.integers(-32768, 32767, size=(4, 2048)).astype(np.float32),
                        np.full((1, 2048), np.nan, np.float32)])
    spec = {"kind": "zscore"}
    with monkeypatch.context() as mp:
        mp.setattr(normalize_mod, "_kernels", FixedKernels(None))
        want, want_level = normalize_mod.normalize_with_level(w, spec)
        want_one = normalize_mod.normalize_with_level(w[0], spec)
    if path != "compiled":
        monkeypatch.setattr(normalize_mod, "_kernels", FixedKernels(normalize_mod._zscore_py))
    got, level = normalize_mod.normalize_with_level(w, spec)
    np.testing.assert_array_max_ulp(got[:-1], want[:-1], maxulp=1)
    assert np.isnan(got[-1]).all() and np.isnan(level[-1])
    np.testing.assert_allclose(level[:-1], want_level[:-1], rtol=1e-12)
    assert np.mean(got[:-1] == want[:-1]) > 0.999  # one ulp apart, and rarely
    one, one_level = normalize_mod.normalize_with_level(w[0], spec)
    assert np.array_equal(one, got[0]) and one_level == level[0] and type(one_level) is type(want_one[1])
    x = w[:4].copy()  # the batch path (BatchNormalizer.in_place), written where the windows lie
    y, lv = normalize_mod.BatchNormalizer(spec).in_place(x)
    assert y is x and np.array_equal(x, got[:4]) and np.array_equal(lv, level[:4])


def test_normalize_kinds_and_batch_equals_single(inner):
    w = inner[: 4 * 1024].reshape(4, 1024)
    z = normalize(w, {"kind": "zscore"})
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(1), 1, atol=1e-4)
    for kind in ({"kind": "zscore"}, {"kind": "rms", "floor": 0.01}, {"kind": "affine", "mean": 0.1, "std": 2.0}):
        batch = normalize(w, kind)
        for i in range(4):
            assert np.array_equal(batch[i], normalize(w[i], kind))
    quiet = np.full(100, 1e-4, np.float32)
    assert np.max(np.abs(normalize(quiet, {"kind": "rms", "floor": 0.01}))) == pytest.approx(0.01)
    loud = normalize(w[0] * 10, {"kind": "rms", "floor": 0.01})
    assert np.sqrt(np.mean(loud.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-5)
    assert np.array_equal(normalize(w, {"kind": "none"}), w)
    with pytest.raises(ConfigError, match="valid kinds: zscore, none, affine, rms"):
        normalize(w, {"kind": "minmax"})
    with pytest.raises(ConfigError, match="'mean' and 'std'"):
        normalize(w, {"kind": "affine", "mean": 0})


@pytest.mark.parametrize("kind", ["gaussian", "laplacian", "pink"])
@pytest.mark.parametrize("target", [-5.0, 0.0, 10.0])
def test_add_noise_hits_the_snr(inner, kind, target):
    noisy = add_noise(inner, target, kind, np.random.default_rng(1))
    assert noisy.dtype == inner.dtype and noisy.shape == inner.shape
    assert snr_db(inner, noisy) == pytest.approx(target, abs=0.1)


def test_add_noise_rows_seed_and_shapes(inner):
    rows = inner[: 8 * 4096].reshape(8, 4096) * np.linspace(0.1, 3, 8)[:, None].astype(np.float32)
    noisy = add_noise(rows, 3.0, "gaussian", 7)
    for r, nr in zip(rows, noisy):
        assert snr_db(r, nr) == pytest.approx(3.0, abs=0.1)
    assert np.array_equal(noisy, add_noise(rows, 3.0, "gaussian", 7))
    assert not np.array_equal(noisy, add_noise(rows, 3.0, "gaussian", 8))
    assert np.array_equal(add_noise(rows, np.inf, "pink", 0), rows)
    with pytest.raises(ConfigError, match="gaussian, laplacian, pink"):
        add_noise(rows, 0.0, "brown", 0)


def test_noise_kinds_have_their_statistics():
    n = 1 << 18
    rng = np.random.default_rng(3)

    def excess_kurtosis(v):
        return float(np.mean(v**4) / np.mean(v**2) ** 2 - 3.0)

    assert abs(excess_kurtosis(make_noise(n, "gaussian", rng))) < 0.1
    assert excess_kurtosis(make_noise(n, "laplacian", rng)) == pytest.approx(3.0, abs=0.3)
    f, p = welch(make_noise(n, "pink", rng), fs=12000, nperseg=8192)
    band = (f >= 20) & (f <= 4000)
    slope = np.polyfit(np.log10(f[band]), 10 * np.log10(p[band]), 1)[0]
    assert slope == pytest.approx(-10.0, abs=1.0)  # dB per decade
    f, p = welch(make_noise(n, "gaussian", rng), fs=12000, nperseg=8192)
    flat = np.polyfit(np.log10(f[band]), 10 * np.log10(p[band]), 1)[0]
    assert abs(flat) < 1.0


@pytest.mark.parametrize("window,hop", [(4, 10), (64, 16), (100, 100)])
@pytest.mark.parametrize("start", [0, 3, 150])
def test_windower_cuts_every_hop_for_any_chunking(window, hop, start):
    from drsn_stream.dsp import Windower

    x = np.arange(1000, dtype=np.float32)
    for chunk in (1, 5, 333):
        w = Windower(window, hop, start=start)
        out = [r for a in range(0, x.size, chunk) for r in w.push(x[a : a + chunk])]
        assert len(out) == (x.size - start - window) // hop + 1
        for i, end, data in out:
            first = start + i * hop
            assert end == first + window and np.array_equal(data, x[first:end])
            assert not data.flags.writeable  # windows overlap: one written into would change the next
    # the samples of windows handed out stay theirs while the stream goes on (no copy per window)
    w = Windower(window, hop, start=start)
    kept = [(i, data) for a in range(0, x.size, 7) for i, _, data in w.push(x[a : a + 7] * 2)]
    for a in range(0, x.size, 7):
        w.push(-x[a : a + 7])
    assert all(np.array_equal(data, 2 * x[start + i * hop : start + i * hop + window]) for i, data in kept)
    # windows read and let go at once (the monitor's way): the buffer is written over rather than
    # replaced, and the one window still held keeps its samples while the stream goes on
    for channels in (None, 3):
        w = Windower(window, hop, start=start, channels=channels)
        xs = x if channels is None else np.stack([x, -x, 2 * x])
        held, count = None, 0
        for a in range(0, x.size, 7):
            for i, _, data in w.push(xs[..., a : a + 7]):
                first = start + i * hop
                assert np.array_equal(data, xs[..., first : first + window])
                held, count = (data, first) if i == 1 else held, count + 1
        assert count == (x.size - start - window) // hop + 1
        assert held is not None and np.array_equal(held[0], xs[..., held[1] : held[1] + window])


def test_phases_spread_streams_over_the_hop_by_their_id_alone():
    """``--phases N``: a stream's first window starts at one of N places in the hop, chosen from
    its id alone, so a gateway's streams complete their windows in turn, about 1/N of them per
    hop/N samples, and the same stream gets the same windows in every process and run."""
    from drsn_stream.dsp.window import window_start

    ids = [f"gw-{m}" for m in range(256)]
    assert {window_start(sid, 2048, 1) for sid in ids} == {0}
    starts = [window_start(sid, 2048, 4) for sid in ids]
    share = np.bincount(np.array(starts) // 512, minlength=4) / len(ids)
    assert set(starts) == {0, 512, 1024, 1536} and share.max() < 0.35, share
    assert starts == [window_start(sid, 2048, 4) for sid in ids]  # not random
    assert set(window_start(sid, 300, 4) for sid in ids) == {0, 75, 150, 225}


def test_a_later_start_shifts_the_windows_and_keeps_them_chunk_invariant(normal48):
    """Window k of a stream started at ``start`` is window k of the stream's samples from
    ``start`` on: through the 48 -> 12 kHz resampler, at any chunk size, for one channel and for
    every channel of a multi-channel frame."""
    from drsn_stream.dsp import FrameDSP

    meta = _meta(hop=2048)
    x = normal48[:480000]
    ref, _ = _feed(x, 48000, 4096, meta)
    shifted, _ = _feed(x, 48000, 4096, meta, hop=1024)  # windows every 1024 samples ...
    odd = shifted[1::2]  # ... of which these start at 1024 + k * 2048
    for chunk in (1, 333, 4096):
        dsp = StreamDSP(meta, hop=2048, start=1024)
        two = FrameDSP(meta, ("m/ch0", "m/ch1"), hop=2048, start=1024)
        y = np.stack([x, -x], axis=1)
        got, both = [], []
        for seq, a in enumerate(range(0, 48000 * 2 if chunk == 1 else x.size, chunk)):
            got += dsp.push(Frame("s", seq, T0 + a / 48000, 48000.0, x[a : a + chunk, None]))
            both += two.push(Frame("m", seq, T0 + a / 48000, 48000.0, y[a : a + chunk]))
        assert len(got) >= 10
        n = len(got)
        assert [w.index for w in got] == list(range(n))
        for w, want in zip(got, odd[:n]):
            np.testing.assert_array_equal(w.data, want.data)
            assert w.t_last == pytest.approx(want.t_last, abs=1e-6)
        ch0 = [w for w in both if w.stream_id == "m/ch0"]
        ch1 = [w for w in both if w.stream_id == "m/ch1"]
        assert len(ch0) == len(ch1) == n
        for a, b, w in zip(ch0, ch1, got):
            np.testing.assert_array_equal(a.data, w.data)
            np.testing.assert_allclose(b.data, -w.data, atol=1e-6)
    assert ref[0].t_last < got[0].t_last  # the shifted stream's first window ends later


def test_frames_at_the_models_rate_give_each_channel_its_own_windows_and_nonfinite_count(inner):
    """Multi-channel frames at the model's rate (no resampler): every channel gets the windows
    (data, index, time) and the NaN/Inf count its own StreamDSP gives it, at any chunk size, with
    a later start, C-ordered frames or not."""
    from drsn_stream.dsp import FrameDSP

    meta = _meta()
    x = inner[: 12000 * 2]
    y = np.stack([x, -x, 0.5 * x], axis=1).astype(np.float32)
    y[1000:1010, 1] = np.nan
    y[5000, 2] = np.inf
    y[20000:20003, 0] = -np.inf
    ids = ("m/ch0", "m/ch1", "m/ch2")
    for chunk, start in ((1, 0), (333, 700), (4096, 0), (512, 300)):
        dsp = FrameDSP(meta, ids, start=start)
        got = []
        for seq, a in enumerate(range(0, y.shape[0], chunk)):
            part = y[a : a + chunk] if seq % 7 != 3 else np.asfortranarray(y[a : a + chunk])
            got += dsp.push(Frame("m", seq, T0 + a / 12000, 12000.0, part))
        for k, sid in enumerate(ids):
            alone = StreamDSP(meta, channel=k, start=start)
            ref = [w for seq, a in enumerate(range(0, y.shape[0], 1000))
                   for w in alone.push(Frame("m", seq, T0 + a / 12000, 12000.0, y[a : a + 1000]))]
            mine = [w for w in got if w.stream_id == sid]
            assert len(ref) >= 40 and [w.index for w in mine] == [w.index for w in ref], (chunk, sid)
            assert np.array_equal(np.stack([w.data for w in mine]), np.stack([w.data for w in ref])), (chunk, sid)
            assert [w.t_last for w in mine] == pytest.approx([w.t_last for w in ref], abs=1e-6)
            assert alone.nonfinite == (3, 10, 1)[k]
        assert dsp.nonfinite_by_stream() == {"m/ch0": 3, "m/ch1": 10, "m/ch2": 1} and dsp.nonfinite == 14


@pytest.mark.parametrize("norm", [{"kind": "zscore"}, {"kind": "rms", "floor": 0.005}])
def test_batch_normalization_step_gives_the_same_windows(inner, norm):
    # The monitor's DSP hands out raw windows and its batch step normalizes each batch in one
    # call: the model must see exactly the windows StreamDSP would have normalized one by one.
    from drsn_stream.dsp.normalize import BatchNormalizer

    meta = _meta(normalization=norm)
    x = inner[: 12000 * 2]
    ref, _ = _feed(x, 12000, 700, meta)
    dsp = StreamDSP(meta, normalize=False)
    raw = []
    for seq, a in enumerate(range(0, x.size, 700)):
        raw += dsp.push(Frame("s", seq, T0 + a / 12000, 12000, x[a : a + 700, None]))
    assert len(raw) == len(ref) > 30 and not any(w.normalized for w in raw)
    assert np.array_equal(raw[5].data, x[5 * 512 : 5 * 512 + 2048])  # raw samples, untouched
    step = BatchNormalizer(norm)
    mixed = raw[:10] + ref[10:20]  # already-normalized windows pass through unchanged
    batch, levels = step(mixed)
    assert batch.dtype == np.float32
    assert np.array_equal(batch, np.stack([w.data for w in ref[:20]]))
    assert np.array_equal(levels, [w.level for w in ref[:20]])  # levels returned, bit for bit
    all_raw, raw_levels = step(raw[:20])
    assert np.array_equal(all_raw, batch) and np.array_equal(raw_levels, levels)
    # the windows are only read: the raw ones keep their raw samples and carry no level
    assert np.array_equal(raw[5].data, x[5 * 512 : 5 * 512 + 2048]) and all(w.level == 0.0 for w in raw)
    # windows of other lengths are refused, never cut into rows of the first one's length
    short = Window("s", 99, T0, raw[0].data[:2047], T0, 0.0, False)
    long_ = Window("s", 100, T0, x[:2049], T0, 0.0, False)
    with pytest.raises(ValueError):
        step([raw[0], short, long_, raw[1]])


def test_a_bad_normalization_spec_is_refused_before_any_window():
    from drsn_stream.dsp.normalize import BatchNormalizer

    with pytest.raises(ConfigError, match="valid kinds: zscore"):
        BatchNormalizer({"kind": "minmax"})
