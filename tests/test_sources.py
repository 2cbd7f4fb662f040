"""Source specs, the CWRU simulator and file replay, on the real recordings."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import scipy.io
from helpers import damaged_wavs, save_mat73
from scipy.io import wavfile

from drsn_stream.dsp import snr_db
from drsn_stream.errors import ConfigError, SourceError
from drsn_stream.sources import make_source, parse_spec
from drsn_stream.sources.sim import HEALTHY, bearing_labels, load_excerpts

LABELS = ["normal", "ball_007", "ball_014", "ball_021", "inner_007", "inner_014", "inner_021",
          "outer_007", "outer_014", "outer_021"]


def test_parse_spec():
    s = parse_spec("sim:bearing?machines=8&noise=pink&fast")
    assert (s.kind, s.target, s.options) == ("sim", "bearing", {"machines": "8", "noise": "pink", "fast": "1"})
    z = parse_spec("zmq+pull://10.0.0.5:5555?topic=press")
    assert (z.kind, z.target, z.options) == ("zmq+pull", "10.0.0.5:5555", {"topic": "press"})
    assert parse_spec("mic").target == "" and parse_spec("mic:2").target == "2"


def test_unknown_kinds_and_options_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"valid kinds: sim, file, zmq.*mic"):
        make_source("kafka://broker:9092")
    says = "unknown option(s) machine for source 'sim' (did you mean machines?); valid: machines"
    with pytest.raises(ConfigError, match=re.escape(says)):
        make_source("sim?machine=3")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) loud for source 'sim'; valid: machines"):
        make_source("sim?loud=3")  # nothing near it: no guess
    with pytest.raises(ConfigError, match="noise='brown'.*one of none, gaussian, laplacian, pink"):
        make_source("sim?noise=brown")
    with pytest.raises(ConfigError, match="valid: bearing, speech"):
        make_source("sim:turbine")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        make_source("zmq://localhost")


@pytest.mark.parametrize("spec, says", [
    # each hung the monitor (2^63 machines or channels), raised from inside numpy or pyzmq, or
    # fed NaN on: now one line naming the option and its bound
    # (one past the bound: 2^63 machines or channels, refused the same, would fill the memory
    # of a test run without the check)
    ("sim:bearing?machines=100001", "machines='100001': must be at most 100,000"),
    ("sim:bearing?channels=257", "channels='257': must be at most 256"),
    ("sim:bearing?rate=9223372036854775807", "rate='9223372036854775807': must be at most 1,000,000"),
    ("sim:bearing?snr=nan", "snr='nan': must be a finite number"),
    ("sim:speech?snr=inf", "snr='inf': must be a finite number"),
    ("file:x.wav?start=nan", "start='nan': must be a finite number"),
    ("file:x.wav?start=-2", "start='-2': must be >= 0"),
    ("zmq+pull://127.0.0.1:5999?hwm=9223372036854775807", "hwm='9223372036854775807': must be at most 2,147,483,647"),
    ("mic?channels=1000", "channels='1000': must be at most 256"),
    # words for the option, not int()'s "invalid literal for int() with base 10"
    ("sim:bearing?machines=abc", "machines='abc': not a whole number (number of machines"),
    ("sim:bearing?machines=2.5", "machines='2.5': not a whole number"),
    ("sim:bearing?speed=fast", "speed='fast': not a number (pace"),
    ("sim:speech?snr=x", "snr='x': not a number"),
    ("zmq+pull://127.0.0.1:5999?channel=first", "channel='first': not a whole number"),
])
def test_an_option_out_of_its_range_is_refused_naming_it_and_the_bound(spec: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        make_source(spec)
    make_source(spec.split("?")[0])  # the same source without it is fine


def _collect(src):
    with src:
        frames = list(src)
    out = {}
    for f in frames:
        out.setdefault(f.stream_id, []).append(f)
    return src, out


def test_sim_excerpts_are_the_held_out_end_of_real_recordings(data_dir):
    ex = load_excerpts()
    assert list(ex) == LABELS == bearing_labels()
    mat = scipy.io.loadmat(data_dir / "cwru" / "12k_Drive_End_IR021_0_209.mat")
    x = mat[next(k for k in mat if k.endswith("_DE_time"))].ravel()
    tail = x[-ex["inner_021"].size :]
    assert ex["inner_021"].size >= 2.5 * 12000 and ex["inner_021"].size <= 0.25 * x.size + 1
    np.testing.assert_allclose(ex["inner_021"], tail, atol=np.abs(tail).max() / 32767)


def test_sim_is_reproducible_and_seeded():
    spec = "sim?machines=3&fast=1&duration=20&seed=5&noise=laplacian&snr=5"
    _, a = _collect(make_source(spec))
    _, b = _collect(make_source(spec))
    _, c = _collect(make_source(spec.replace("seed=5", "seed=6")))
    assert sorted(a) == ["sim/m0", "sim/m1", "sim/m2"]
    for sid in a:
        assert np.array_equal(np.concatenate([f.samples for f in a[sid]]), np.concatenate([f.samples for f in b[sid]]))
        assert not np.array_equal(np.concatenate([f.samples for f in a[sid]]), np.concatenate([f.samples for f in c[sid]]))
        assert sum(f.n for f in a[sid]) == 20 * 12000
        assert [f.seq for f in a[sid]] == list(range(len(a[sid])))


def test_sim_first_sends_the_same_machines_as_one_simulator_of_all():
    # Several publishers each simulate a part of a fleet (bench_pipeline --publishers): machine
    # sim/mK must replay the same whichever simulator sends it.
    spec = "sim?machines=5&fast=1&duration=8&seed=5&noise=pink&channels=2"
    _, whole = _collect(make_source(spec))
    _, part = _collect(make_source(spec.replace("machines=5", "machines=2&first=3")))
    assert sorted(part) == ["sim/m3", "sim/m4"]
    for sid in part:
        assert np.array_equal(np.concatenate([f.samples for f in part[sid]]),
                              np.concatenate([f.samples for f in whole[sid]]))
    with pytest.raises(ConfigError, match="count from 0"):
        make_source("sim?first=-1")


def test_sim_reads_all_machines_at_once_exactly_as_one_by_one():
    # The simulator computes a chunk of every machine in one go; across fault changes, excerpt
    # ends and chunks longer than an excerpt it must replay the same samples as reading each
    # machine on its own.
    for spec, chunk in (("sim?machines=6&noise=pink&snr=3&seed=4&fast=1", 700),
                        ("sim?machines=3&seed=2&fast=1&chunk=50000", 50000),
                        ("sim?machines=4&noise=pink&seed=3&fast=1&sweep=7&swing=0.3", 700)):
        src = make_source(spec)
        with src:
            changes = 0
            for a in range(0, 12000 * 40, chunk):
                block = src._block(a, a + chunk)
                for m in range(len(src.streams)):
                    assert np.array_equal(block[m], src._signal(m, a, a + chunk)), (spec, a, m)
                    changes += src._schedules[m].constant(a, a + chunk) is None
        assert changes > 0  # some chunks straddled a fault appearing or clearing


def test_paced_sim_says_when_it_has_handed_over_a_whole_chunk():
    # on_idle comes before each pacing sleep, after every machine's frame of the chunk: the
    # monitor's batcher then sends those windows at once. A simulator that has fallen behind real
    # time (a loaded machine) does not sleep and says nothing, so chunks may share a group, but
    # never is a chunk split by it.
    src = make_source("sim?machines=3&duration=0.5&chunk=600&seed=1")
    events: list[object] = []
    src.on_idle = lambda: events.append("idle")
    with src:
        for frame in src:
            events.append((frame.stream_id, frame.seq))
    groups, cur = [], []
    for e in events:
        if e == "idle":
            if cur:
                groups.append(cur)
            cur = []
        else:
            cur.append(e)
    groups.append(cur)  # the last chunk ends the stream instead
    chunks = 0
    for g in groups:
        seqs = {seq for _, seq in g}
        assert sorted(g) == sorted((f"sim/m{m}", seq) for seq in seqs for m in range(3)), g  # whole chunks
        chunks += len(seqs)
    assert chunks == 10  # 0.5 s in chunks of 600 samples at 12 kHz
    assert len(groups) >= 2, "the paced simulator never said it was waiting"


class _Matcher:
    """Max normalized correlation of a segment against every cyclic shift of a reference."""

    def __init__(self, ref: np.ndarray, m: int) -> None:
        n = ref.size
        self.n, self.m = n, m
        self.spec = np.fft.rfft(ref)
        ext = np.concatenate([ref, ref[:m]])
        csum = np.concatenate([[0.0], np.cumsum(ext)])
        csq = np.concatenate([[0.0], np.cumsum(ext**2)])
        k = np.arange(n)
        mean = (csum[k + m] - csum[k]) / m
        self.norm = m * np.sqrt(np.maximum((csq[k + m] - csq[k]) / m - mean**2, 1e-30))

    def __call__(self, seg: np.ndarray) -> float:
        seg = (seg - seg.mean()) / seg.std()
        corr = np.fft.irfft(self.spec * np.conj(np.fft.rfft(seg, self.n)), self.n)
        return float(np.max(corr / self.norm))


def test_sim_sweep_runs_each_machine_down_and_up_and_its_frames_carry_the_speed():
    # sweep=S: the shaft runs down by swing and back up, once every S seconds, each machine at its
    # own point of the cycle; the recording is read that much slower, and every frame carries its
    # mean speed (a tachometer's reading), where the plain simulator's carry none
    src, streams = _collect(make_source("sim?machines=3&fast=1&duration=20&sweep=10&swing=0.2&fault=inner_014&seed=1"))
    assert src.rpm is None  # the frames say it
    for sid, frames in streams.items():
        rpm = np.array([f.rpm for f in frames])
        assert rpm.min() == pytest.approx(0.8 * 1797, rel=0.005) and rpm.max() == pytest.approx(1797, rel=0.005)
        assert np.abs(np.diff(rpm)).max() < 0.2 * 1797 * 2 / 10 * 512 / 12000 * 1.01  # a triangle, no jumps
        # the samples are the recording read at that speed: put back on the recording's own steps
        # (each frame spread over 512 x speed / 1797 of them), they are the excerpt
        x = np.concatenate([f.samples[:, 0] for f in frames]).astype(np.float64)
        read = np.concatenate([[0.0], np.cumsum(np.repeat(rpm / 1797, 512))])[: x.size]
        back = np.interp(np.arange(1000, 9000), read, x)
        ex = load_excerpts()["inner_014"].astype(np.float64)
        start = src._offs[int(sid[-1]), LABELS.index("inner_014")] + 1000
        assert np.corrcoef(back, np.take(ex, np.arange(start, start + 8000), mode="wrap"))[0, 1] > 0.9, sid
    _, plain = _collect(make_source("sim?machines=1&fast=1&duration=1"))
    assert {f.rpm for f in plain["sim/m0"]} == {None}
    for bad in ("swing=0", "swing=0.6", "sweep=-1", "sweep=nan", "sweep=1e-300", "sweep=inf"):
        with pytest.raises(ConfigError, match="swing|sweep"):
            make_source(f"sim?sweep=10&{bad}")


def test_sim_settle_keeps_every_machine_healthy_for_its_first_seconds_then_faults_come():
    # settle=S: a demo of learning a machine's normal (--learn) before the faults start
    src, streams = _collect(make_source("sim?machines=4&fast=1&duration=40&seed=2&settle=20"))
    for sid, frames in streams.items():
        labels = [src.truth(sid, f.t_capture + (f.n - 1) / 12000) for f in frames]
        at = np.array([f.t_capture - src.t0 for f in frames])
        assert {lb for lb, t in zip(labels, at) if t < 20} == {HEALTHY}, sid
        assert any(lb != HEALTHY for lb, t in zip(labels, at) if t >= 20), sid  # 3-10 s later
    plain, frames = _collect(make_source("sim?machines=4&fast=1&duration=12&seed=2"))  # without: within 3-10 s
    assert all(any(plain.truth(sid, f.t_capture) != HEALTHY for f in fr) for sid, fr in frames.items())
    for bad in ("settle=-1", "settle=nan", "settle=1e300"):
        with pytest.raises(ConfigError, match="settle"):
            make_source(f"sim?{bad}")


def test_sim_truth_names_the_recording_that_plays(data_dir):
    src, streams = _collect(make_source("sim?machines=2&fast=1&duration=90&seed=2&chunk=1024"))
    match = {k: _Matcher(v.astype(np.float64), 1024) for k, v in load_excerpts().items()}
    for sid, frames in streams.items():
        labels = [src.truth(sid, f.t_capture) for f in frames]
        ends = [src.truth(sid, f.t_capture + (f.n - 1) / 12000) for f in frames]
        assert labels[0] == HEALTHY and HEALTHY in labels[len(labels) // 2 :]
        faults = {lb for lb in labels if lb != HEALTHY}
        assert faults, "a fault appears within 90 s"
        # Faults come and go: spells last seconds, not the whole run.
        changes = sum(1 for p, q in zip(labels, labels[1:]) if p != q)
        assert changes >= 2
        checked = 0
        for f, lb, lb_end in zip(frames[::40], labels[::40], ends[::40]):
            if lb != lb_end:
                continue  # frame straddles a change
            seg = f.samples[:, 0].astype(np.float64)
            scores = {k: m(seg) for k, m in match.items()}
            assert scores[lb] > 0.9999, (sid, lb, scores[lb])
            assert max(v for k, v in scores.items() if k != lb) < 0.99
            checked += 1
        assert checked >= 15


def test_sim_noise_at_snr_and_fixed_fault():
    clean_src, clean = _collect(make_source("sim?machines=1&fast=1&duration=10&fault=inner_014"))
    _, noisy = _collect(make_source("sim?machines=1&fast=1&duration=10&fault=inner_014&noise=gaussian&snr=0"))
    c = np.concatenate([f.samples[:, 0] for f in clean["sim/m0"]])
    n = np.concatenate([f.samples[:, 0] for f in noisy["sim/m0"]])
    assert snr_db(c, n) == pytest.approx(0.0, abs=0.5)
    assert clean_src.truth("sim/m0", clean["sim/m0"][-1].t_capture) == "inner_014"


def test_sim_capture_times_follow_the_sample_clock():
    src, streams = _collect(make_source("sim?machines=1&fast=1&duration=2&chunk=600&rate=16000"))
    frames = streams["sim/m0"]
    assert frames[0].sample_rate == 16000.0 and frames[0].samples.shape == (600, 1)
    dt = np.diff([f.t_capture for f in frames])
    np.testing.assert_allclose(dt, 600 / 16000, atol=1e-6)  # epoch seconds carry ~0.2 us steps
    assert frames[0].t_capture == pytest.approx(src.t0)


@pytest.fixture(scope="module")
def wav_path(data_dir):
    path = data_dir / "fsdd" / "recordings" / "3_theo_10.wav"
    if not path.is_file():
        pytest.skip(f"FSDD recording {path} not found")
    return path


def _replay(spec, **kw):
    with make_source(spec, **kw) as src:
        frames = list(src)
    return src, frames


def test_file_wav_npy_csv_give_the_same_samples(wav_path, tmp_path):
    rate, raw = wavfile.read(wav_path)
    ref = raw.astype(np.float32) / 32768
    src, frames = _replay(f"file:{wav_path}?fast=1&chunk=256")
    assert src.streams == ["3_theo_10"] and frames[0].sample_rate == rate == 8000
    assert np.array_equal(np.concatenate([f.samples[:, 0] for f in frames]), ref)
    np.save(tmp_path / "rec.npy", ref)
    _, npy = _replay(f"{tmp_path / 'rec.npy'}?rate=8000&fast=1")
    assert np.array_equal(np.concatenate([f.samples[:, 0] for f in npy]), ref)
    two = np.stack([ref, -ref], axis=1)
    np.savetxt(tmp_path / "rec.csv", two, delimiter=",", header="left,right", comments="", fmt="%.9g")
    _, csv = _replay(f"file:{tmp_path / 'rec.csv'}?rate=8000&fast=1&stream=bench/1")
    got = np.concatenate([f.samples for f in csv])
    assert csv[0].stream_id == "bench/1" and got.shape == (ref.size, 2)
    np.testing.assert_allclose(got, two, rtol=1e-6)
    with pytest.raises(ConfigError, match=r"\?rate=12000"):
        _replay(f"file:{tmp_path / 'rec.npy'}")


def test_file_mat_uses_the_cwru_rate_rule_and_channels(data_dir):
    src, frames = _replay(f"file:{data_dir / 'cwru' / 'normal_0_97.mat'}?fast=1&chunk=4096")
    assert frames[0].sample_rate == 48000.0 and sum(f.n for f in frames) == 243938
    mat = scipy.io.loadmat(data_dir / "cwru" / "12k_Drive_End_OR007@6_0_130.mat")
    _, fe = _replay(f"file:{data_dir / 'cwru' / '12k_Drive_End_OR007@6_0_130.mat'}?fast=1&channel=FE&start=1&duration=2")
    x = np.concatenate([f.samples[:, 0] for f in fe])
    assert fe[0].sample_rate == 12000.0 and x.size == 24000
    assert np.array_equal(x, mat["X130_FE_time"].ravel()[12000:36000].astype(np.float32))
    with pytest.raises(SourceError, match="no BA channel.*X097_DE_time"):
        _replay(f"file:{data_dir / 'cwru' / 'normal_0_97.mat'}?channel=BA")


def _samples(spec: str) -> tuple[list[str], np.ndarray, float]:
    """(stream ids, samples (n, channels), rate) of a file source replayed whole."""
    src, frames = _replay(spec)
    return src.streams, np.concatenate([f.samples for f in frames]), frames[0].sample_rate


def test_any_matlab_file_plays_its_signal_at_the_rate_it_states(data_dir, tmp_path):
    """Before: every .mat file not laid out as CWRU's (X097_DE_time) was refused with "no DE
    channel; choose one with ?channel=DE|FE|BA", which no channel= could mend: a test rig's
    struct (MFPT's bearing.gs and bearing.sr), a logger's matrix with its fs, two vectors and a
    time vector. Now its signal plays, with the rate the file states."""
    x = scipy.io.loadmat(data_dir / "cwru" / "12k_Drive_End_IR014_0_169.mat")["X169_DE_time"][:30000, 0]
    ref = x.astype(np.float32)
    # MFPT's layout: one struct, the signal a column, its rate sr, the shaft's rate beside it
    scipy.io.savemat(tmp_path / "rig.mat", {"bearing": {"gs": x[:, None], "sr": 48828.0, "load": 25.0, "rate": 25.0}})
    ids, got, rate = _samples(f"file:{tmp_path / 'rig.mat'}?fast=1")
    assert ids == ["rig"] and rate == 48828.0 and np.array_equal(got[:, 0], ref)
    # a matrix with its channels in rows (MATLAB code keeps them either way), a date beside it
    scipy.io.savemat(tmp_path / "rows.mat", {"acc": np.stack([x, -x]), "SampleRate": 12000,
                                             "date": np.array([[2026, 12, 7, 10, 0, 0]])}, do_compression=True)
    ids, got, rate = _samples(f"file:{tmp_path / 'rows.mat'}?fast=1")
    assert ids == ["rows/ch0", "rows/ch1"] and rate == 12000.0 and np.array_equal(got, np.stack([ref, -ref], 1))
    # vectors of one length are the channels, by their names; a time vector gives the rate
    scipy.io.savemat(tmp_path / "two.mat", {"acc_x": x, "acc_y": -x, "time_ms": np.arange(x.size) / 20.0})
    ids, got, rate = _samples(f"file:{tmp_path / 'two.mat'}?fast=1")
    assert ids == ["two/acc_x", "two/acc_y"] and rate == 20000.0 and np.array_equal(got[:, 1], -ref)
    # a struct array of channels, rates in kHz one level up: a variable is picked by its name's end
    scipy.io.savemat(tmp_path / "rec.mat", {"rec": {"Y": np.array([{"Name": "speed", "Data": x[:4000]},
                                                                   {"Name": "vib", "Data": x}], dtype=object),
                                                    "fs_khz": 64.0, "rpm": 1797.0}})
    with pytest.raises(SourceError, match=r"several signals: rec\.Y\{1\}\.Data 'speed' \(1 x 4,000\), rec\.Y\{2\}\.Data "
                                          r"'vib' \(1 x 30,000\); choose one with \?channel=NAME"):
        _replay(f"file:{tmp_path / 'rec.mat'}")
    src, frames = _replay(f"file:{tmp_path / 'rec.mat'}?fast=1&channel=Y{{2}}.Data")
    assert frames[0].sample_rate == 64000.0 and src.rpm == 1797.0
    assert np.array_equal(np.concatenate([f.samples[:, 0] for f in frames]), ref)
    # a logger's struct array (Paderborn's layout): each channel's Data beside its Name, which picks it
    y = np.zeros((1, 3), dtype=[("Name", "O"), ("Unit", "O"), ("Data", "O")])
    y[0, 0], y[0, 1], y[0, 2] = ("force", "N", x[None, :4000]), ("vibration_1", "m/s^2", x[None]), ("temp", "C", x[None, :4])
    scipy.io.savemat(tmp_path / "pu.mat", {"N15_M07": {"Info": "run 1", "Y": y}}, do_compression=True)
    with pytest.raises(SourceError, match=r"N15_M07\.Y\(1\)\.Data 'force' \(1 x 4,000\), N15_M07\.Y\(2\)\.Data "
                                          r"'vibration_1' \(1 x 30,000\); choose one"):
        _replay(f"file:{tmp_path / 'pu.mat'}?rate=64000")
    _, got, rate = _samples(f"file:{tmp_path / 'pu.mat'}?channel=vibration_1&rate=64000&fast=1")
    assert rate == 64000.0 and np.array_equal(got[:, 0], ref)
    # what cannot be guessed is said, with what the file holds
    with pytest.raises(SourceError, match=r"bearing\.sr \(1 x 1\) is not a signal .*its signals: bearing\.gs"):
        _replay(f"file:{tmp_path / 'rig.mat'}?channel=sr")
    with pytest.raises(SourceError, match=r"no variable DE; its signals: bearing\.gs \(30,000 x 1\)"):
        _replay(f"file:{tmp_path / 'rig.mat'}?channel=DE")
    scipy.io.savemat(tmp_path / "bare.mat", {"vib": x})
    with pytest.raises(ConfigError, match=r"no fs, sr or dt variable beside its signal.*\?rate=12000"):
        _replay(f"file:{tmp_path / 'bare.mat'}")
    scipy.io.savemat(tmp_path / "settings.mat", {"fs": 12000, "geometry": np.array([7.94, 39.04, 9.0])})
    with pytest.raises(SourceError, match=r"no signal in it .*it holds fs \(1 x 1\), geometry \(1 x 3\)"):
        _replay(f"file:{tmp_path / 'settings.mat'}")
    _, got, rate = _samples(f"file:{tmp_path / 'bare.mat'}?fast=1&rate=12000")
    assert rate == 12000.0 and np.array_equal(got[:, 0], ref)
    with pytest.raises(ConfigError, match="channel=0: a CWRU .mat file's channels are named"):
        _replay(f"file:{data_dir / 'cwru' / 'normal_0_97.mat'}?channel=0")
    # MATLAB's -v7.3 files are HDF5 (scipy: "Please use HDF reader"; refused before): read by h5py,
    # they play as their v7 twins do
    x = scipy.io.loadmat(data_dir / "cwru" / "12k_Drive_End_IR014_0_169.mat")["X169_DE_time"][:30000]
    rig = {"bearing": {"gs": x, "sr": 48828.0, "rate": 25.0}}
    rec = {"rec": {"Y": [{"Name": "force", "Data": x[:4000].T}, {"Name": "vibration_1", "Data": x.T}]}}
    for name, variables, spec in [("mfpt", rig, "?fast=1"), ("pb", rec, "?fast=1&channel=vibration_1&rate=64000")]:
        scipy.io.savemat(tmp_path / f"{name}7.mat", variables)
        save_mat73(tmp_path / f"{name}73.mat", variables)
        twin = _samples(f"file:{tmp_path / f'{name}7.mat'}{spec}")
        ids, got, rate = _samples(f"file:{tmp_path / f'{name}73.mat'}{spec}")
        assert rate == twin[2] and np.array_equal(got, twin[1]) and np.array_equal(got[:, 0], x[:, 0].astype(np.float32))
    with pytest.raises(SourceError, match=r"pb73.mat: it holds several signals: rec.Y\(1\).Data 'force' \(1 x 4,000\), "
                                          r"rec.Y\(2\).Data 'vibration_1' \(1 x 30,000\); choose one with \?channel=NAME"):
        _replay(f"file:{tmp_path / 'pb73.mat'}")
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(124, b" ") + b"\x00\x02IM"
    (tmp_path / "big.mat").write_bytes(head + b"\x89HDF\r\n\x1a\n" + bytes(512))
    with pytest.raises(SourceError, match=r"big.mat: a MATLAB v7.3 file \(HDF5\) h5py cannot read \("):
        _replay(f"file:{tmp_path / 'big.mat'}")


def test_a_tdms_file_plays_its_channels_at_the_rate_its_waveforms_state(data_dir, tmp_path):
    """NI's TDMS (LabVIEW, DAQmx, FlexLogger logs) was "unknown recording type". Now a group's
    channels of one length play as channels under their names, at their wf_increment's rate, a
    speed channel gives the shaft speed, and channel= picks one by name."""
    from nptdms import ChannelObject, GroupObject, RootObject, TdmsWriter

    x = scipy.io.loadmat(data_dir / "cwru" / "12k_Drive_End_IR014_0_169.mat")["X169_DE_time"][:30000, 0]
    ref = x.astype(np.float32)
    wf = {"wf_increment": 1 / 25600, "wf_start_time": np.datetime64("2026-12-07T10:00:00"), "unit_string": "g"}
    with TdmsWriter(tmp_path / "pump3.tdms") as w:
        w.write_segment([RootObject({"title": "pump 3"}), GroupObject("Vibration"),
                         ChannelObject("Vibration", "Dev1/ai0", x[:15000], properties=wf),
                         ChannelObject("Vibration", "Dev1/ai1", -x[:15000], properties=wf),
                         ChannelObject("Process", "speed_rpm", np.full(8, 1797.0))])
        w.write_segment([ChannelObject("Vibration", "Dev1/ai0", x[15000:]),  # logged in two blocks
                         ChannelObject("Vibration", "Dev1/ai1", -x[15000:])])
    src, frames = _replay(f"file:{tmp_path / 'pump3.tdms'}?fast=1")
    got = np.concatenate([f.samples for f in frames])
    assert src.streams == ["pump3/Dev1_ai0", "pump3/Dev1_ai1"] and frames[0].sample_rate == 25600.0
    assert np.array_equal(got, np.stack([ref, -ref], 1)) and src.rpm == 1797.0
    _, got, _ = _samples(f"file:{tmp_path / 'pump3.tdms'}?fast=1&channel=Dev1/ai1")
    assert np.array_equal(got[:, 0], -ref)
    with pytest.raises(SourceError, match=r"Process/speed_rpm \(8 x 1\) is not a signal .*its signals: Vibration/Dev1/ai0"):
        _replay(f"file:{tmp_path / 'pump3.tdms'}?channel=speed_rpm")
    # no waveform properties: a time channel beside it gives the rate, or ?rate= does
    with TdmsWriter(tmp_path / "log.tdms") as w:
        w.write_segment([GroupObject("Log"), ChannelObject("Log", "Time", np.arange(x.size) / 12800.0),
                         ChannelObject("Log", "accel", x)])
    _, got, rate = _samples(f"file:{tmp_path / 'log.tdms'}?fast=1")
    assert rate == 12800.0 and np.array_equal(got[:, 0], ref)
    # or a rate property of its group, read as a .mat file's rate variable is (fs_khz: kHz)
    with TdmsWriter(tmp_path / "prop.tdms") as w:
        w.write_segment([GroupObject("Log", properties={"fs_khz": 12.8}), ChannelObject("Log", "accel", x)])
    _, got, rate = _samples(f"file:{tmp_path / 'prop.tdms'}?fast=1")
    assert rate == 12800.0 and np.array_equal(got[:, 0], ref)
    (tmp_path / "cut.tdms").write_bytes((tmp_path / "pump3.tdms").read_bytes()[:40])
    with pytest.raises(SourceError, match=r"cut.tdms: a TDMS file with no samples in it \(cut short"):
        _replay(f"file:{tmp_path / 'cut.tdms'}")


def test_columns_of_numbers_under_any_name_play_as_a_csv_file_does(wav_path, tmp_path):
    """Before: a recording had to end in .wav, .npy, .csv or .mat: a logger's .txt export, the
    IMS bearing set's files (named by their time, 2004.02.12.10.32.39: tab-separated columns)
    and a WAV saved as .dat were "unknown recording type". Now what a file holds decides."""
    x = np.round(np.random.default_rng(3).standard_normal((4096, 4)), 3)
    ims = tmp_path / "2004.02.12.10.32.39"
    ims.write_bytes("".join("\t".join(f"{v:.3f}" for v in row) + "\r\n" for row in x).encode())
    ids, got, rate = _samples(f"file:{ims}?rate=20000&fast=1")
    assert ids == [f"2004.02.12.10.32.39/ch{k}" for k in range(4)] and rate == 20000.0
    assert np.array_equal(got, x.astype(np.float32))
    (tmp_path / "log.txt").write_text("Zeit\tBeschleunigung\n" + "".join(f"{k / 8000:.6f}\t{v:.3f}\n".replace(".", ",")
                                                                          for k, v in enumerate(x[:, 0])))
    ids, got, rate = _samples(f"file:{tmp_path / 'log.txt'}?fast=1")
    assert ids == ["log"] and rate == 8000.0 and np.array_equal(got[:, 0], x[:, 0].astype(np.float32))
    # a logger's export: its name and the date first, a header, a row of units, decimal commas
    rows = "".join(f"{k / 8000:.6f};{v:.3f};1797\n".replace(".", ",") for k, v in enumerate(x[:, 0]))
    for name in ("catman.csv", "catman.txt"):
        (tmp_path / name).write_text("Messung: Pumpe 3\nDatum: 07.12.2026 10:00:00\n\nZeit;Beschleunigung;rpm\n"
                                     "s;m/s^2;1/min\n" + rows)
        src, frames = _replay(f"file:{tmp_path / name}?fast=1")
        got = np.concatenate([f.samples for f in frames])
        assert src.streams == ["catman"] and frames[0].sample_rate == 8000.0 and frames[0].rpm == 1797.0
        assert np.array_equal(got[:, 0], x[:, 0].astype(np.float32))
    (tmp_path / "take1.dat").write_bytes(wav_path.read_bytes())
    ids, got, rate = _samples(f"file:{tmp_path / 'take1.dat'}?fast=1")
    assert ids == ["take1"] and rate == 8000.0 and got.shape[0] == wavfile.read(wav_path)[1].size
    (tmp_path / "notes.txt").write_text("pump 3: bearing replaced on monday\nsee the log\n")
    with pytest.raises(ConfigError, match=r"notes.txt: not a recording this reads"):
        make_source(f"file:{tmp_path / 'notes.txt'}")


def test_flac_ogg_mp3_and_aiff_files_play_their_samples(wav_path, tmp_path):
    """Before: "not a recording this reads" for every compressed sound file (a phone's or a web
    corpus's FLAC, Ogg, MP3). Now libsndfile decodes them: lossless ones to the WAV's samples,
    lossy ones to the same sound, at the rate their header states."""
    import soundfile

    rate, raw = wavfile.read(wav_path)
    ref = raw.astype(np.float32) / 32768
    stereo = np.stack([ref, -ref], 1)
    for name, fmt, subtype in [("take.flac", "FLAC", "PCM_16"), ("take.aiff", "AIFF", "PCM_16")]:
        soundfile.write(tmp_path / name, stereo, rate, format=fmt, subtype=subtype)
        ids, got, got_rate = _samples(f"file:{tmp_path / name}?fast=1")
        assert ids == ["take/ch0", "take/ch1"] and got_rate == rate and np.array_equal(got, stereo)
    for name, fmt, subtype in [("take.ogg", "OGG", "VORBIS"), ("take.opus", "OGG", "OPUS"),
                               ("take.mp3", "MP3", "MPEG_LAYER_III")]:
        soundfile.write(tmp_path / name, ref, rate, format=fmt, subtype=subtype)
        ids, got, got_rate = _samples(f"file:{tmp_path / name}?fast=1")
        assert ids == ["take"] and got_rate == rate and got.shape == (ref.size, 1), (name, got.shape)
        assert np.corrcoef(got[:, 0], ref)[0, 1] > 0.95, name
    # what it holds decides under another name; a bare path plays as file: does
    (tmp_path / "take1.dat").write_bytes((tmp_path / "take.flac").read_bytes())
    ids, got, _ = _samples(f"file:{tmp_path / 'take1.dat'}?fast=1")
    assert ids == ["take1/ch0", "take1/ch1"] and np.array_equal(got, stereo)
    assert make_source(str(tmp_path / "take.mp3")).kind == "file"
    flac = (tmp_path / "take.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(flac[: len(flac) // 2])
    with pytest.raises(SourceError, match=r"cut.flac: not a readable sound file \(damaged or cut short: .*; "
                                          r"convert it to WAV, e.g. sox cut.flac cut.wav"):
        _replay(f"file:{tmp_path / 'cut.flac'}")
    (tmp_path / "notes.mp3").write_text("not a sound\n")
    with pytest.raises(SourceError, match=r"notes.mp3: not a readable sound file \(no sound stream found in it\)"):
        _replay(f"file:{tmp_path / 'notes.mp3'}")


def test_a_folder_of_snapshots_plays_as_one_stream_in_name_order(data_dir, tmp_path, cli_in_process):
    """Run-to-failure data sets (IMS, XJTU-SY, FEMTO) are folders of snapshot files, 1.csv ..
    123.csv, which had to be given one by one ("a folder, not a file"), each its own stream. Now
    a folder plays as one stream in name order (numbers as numbers), a file that cannot be read,
    or is of another rate, skipped and said, and it labels as the whole recording does."""
    x = scipy.io.loadmat(data_dir / "cwru" / "12k_Drive_End_IR014_0_169.mat")["X169_DE_time"][:120000, 0]
    parts = np.array_split(x.astype(np.float32), 12)
    run = tmp_path / "pump3"
    run.mkdir()
    for i, part in enumerate(parts, start=1):  # lexical order would play 1, 10, 11, 12, 2 ...
        wavfile.write(run / f"{i}.wav", 12000, part)
    (run / "README.txt").write_text("pump 3, a snapshot every 10 minutes\n")  # not a recording: not listed
    (run / "13.wav").write_bytes(b"RIFF....nonsense")
    wavfile.write(run / "14.wav", 48000, parts[0])
    src, frames = _replay(f"file:{run}?fast=1&chunk=700")
    got = np.concatenate([f.samples for f in frames])[:, 0]
    assert src.streams == ["pump3"] and np.array_equal(got, x.astype(np.float32)) and src.skipped == 2
    assert [f.seq for f in frames] == list(range(len(frames)))
    starts = np.cumsum([0] + [f.n for f in frames[:-1]])
    np.testing.assert_allclose([f.t_capture - frames[0].t_capture for f in frames], starts / 12000, atol=1e-6)
    said = [m for _, m in src.notes]
    assert said[0] == "pump3: 14 recordings played as one stream, in name order (1.wav .. 14.wav)"
    assert any(m.startswith("13.wav: skipped: not a readable WAV file") for m in said)
    assert any(m.startswith("14.wav: skipped: 48000 Hz, 1 channel(s), where the folder's first recording played "
                            "at 12000 Hz") for m in said)
    # a part of it, chosen by name pattern, skip and count (learn on the first, monitor the rest)
    src, frames = _replay(f"file:{run}?fast=1&files=1*.wav&skip=1&count=2")
    assert np.array_equal(np.concatenate([f.samples for f in frames])[:, 0], np.concatenate(parts[9:11]))
    with pytest.raises(ConfigError, match=r"count= choose\(s\) a folder's recordings; .*1.wav is a file"):
        make_source(f"file:{run / '1.wav'}?count=2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"empty: no recordings to play \(0 recording\(s\) in it"):
        _replay(f"file:{tmp_path / 'empty'}")
    res = cli_in_process("--source", f"file:{run}", "--fast", "--headless", "--jsonl", "-")
    preds = [o for o in map(json.loads, filter(lambda ln: ln.startswith("{"), res.stdout.splitlines()))
             if o["type"] == "prediction"]
    assert res.returncode == 0 and len(preds) > 200, res.stderr
    assert sum(p["label"] == "inner_014" for p in preds) > 0.9 * len(preds)


def test_file_loop_continues_seq_and_time(wav_path):
    with make_source(f"file:{wav_path}?fast=1&loop=1&chunk=1000") as src:
        frames = []
        for f in src:
            frames.append(f)
            if len(frames) == 30:
                break
    n = wavfile.read(wav_path)[1].size
    assert [f.seq for f in frames] == list(range(30))
    assert sum(f.n for f in frames) > 2 * n  # played more than twice
    starts = np.cumsum([0] + [f.n for f in frames[:-1]])
    np.testing.assert_allclose([f.t_capture - frames[0].t_capture for f in frames], starts / 8000, atol=1e-6)


def test_a_wav_with_chunks_scipy_does_not_know_plays_without_a_warning(tmp_path):
    # Recordings often carry tag chunks after the samples (the background-noise set's WAVs an
    # "id3 " chunk): scipy warns that it skips them, and the warning landed on the monitor's
    # terminal, as if the samples were in doubt.
    import warnings

    from scipy.io import wavfile

    x = (np.sin(np.arange(4000) / 7.0) * 20000).astype(np.int16)
    wavfile.write(tmp_path / "plain.wav", 12000, x)
    raw = (tmp_path / "plain.wav").read_bytes()
    tag = b"id3 " + (6).to_bytes(4, "little") + b"ID3\x03\x00\x00"
    body = raw[8:] + tag
    (tmp_path / "tagged.wav").write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the replay
        _, frames = _replay(f"file:{tmp_path / 'tagged.wav'}?fast=1")
    got = np.concatenate([f.samples[:, 0] for f in frames])
    assert np.array_equal(got, x / np.float32(32768))  # every sample, at full scale 1.0


def _odd_recordings(folder):
    """Recordings a user may well have made by mistake: ``{name: (path, what the error says)}``."""
    import scipy.io as sio

    out = {}
    for name, data, says in [
        ("complex.npy", np.exp(1j * np.arange(5000) / 9.0).astype(np.complex64), "complex numbers.*x.real"),
        ("text.npy", np.array(["0.1", "0.2"]), "numeric samples.*<U3"),
        ("rows.npy", np.zeros((16, 5000), np.float32), "5,000 channels of 16 samples.*transposed"),
        ("none.npy", np.zeros(0, np.float32), "holds no samples"),
        ("no-channels.npy", np.zeros((4000, 0), np.float32), "holds no samples"),
    ]:
        np.save(folder / name, data)
        out[name] = (folder / name, says)
    (folder / "none.csv").write_text("")
    out["none.csv"] = (folder / "none.csv", "holds no samples")
    sio.savemat(folder / "12k_text.mat", {"X097_DE_time": np.array(["abc"])})
    out["12k_text.mat"] = (folder / "12k_text.mat", "X097_DE_time is not numeric samples")
    (folder / "notes.mat").write_text("pump 3, bearing replaced\n")  # scipy's MatReadError was a traceback
    out["notes.mat"] = (folder / "notes.mat", "notes.mat: cannot read it as a MATLAB .mat file")
    (folder / "empty.mat").write_bytes(b"")
    out["empty.mat"] = (folder / "empty.mat", "empty.mat: cannot read it as a MATLAB .mat file")
    return out


@pytest.mark.parametrize("name", ["complex.npy", "text.npy", "rows.npy", "none.npy", "no-channels.npy", "none.csv",
                                  "12k_text.mat", "notes.mat", "empty.mat"])
def test_a_recording_that_is_not_real_samples_is_one_clear_error(tmp_path, name):
    # Complex samples lost their imaginary part without a word; text in a .mat was a traceback;
    # a (channels, samples) array became thousands of streams and ran without a window; an
    # empty CSV printed numpy's warning on the terminal before the error.
    import warnings

    path, says = _odd_recordings(tmp_path)[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SourceError, match=says):
            _replay(f"file:{path}?rate=12000&fast=1")


def test_samples_beyond_float32_play_as_non_finite_without_a_warning(tmp_path):
    import warnings

    x = np.sin(np.arange(5000) / 9.0)
    x[100:110] = 1e300  # a float64 recording's glitch float32 cannot hold
    np.save(tmp_path / "big.npy", x)
    wavfile.write(tmp_path / "big.wav", 12000, x)  # a float64 WAV
    for name in ("big.npy", "big.wav"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's "overflow encountered in cast" reached the terminal
            _, frames = _replay(f"file:{tmp_path / name}?rate=12000&fast=1")
        got = np.concatenate([f.samples[:, 0] for f in frames])
        assert np.isinf(got[100:110]).all() and np.isfinite(np.delete(got, range(100, 110))).all(), name


def test_file_errors_say_what_to_do(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        _replay(f"file:{tmp_path / 'missing.wav'}")
    (tmp_path / "moved.wav").symlink_to(tmp_path / "archive" / "moved.wav")
    gone = f"a link to {tmp_path / 'archive' / 'moved.wav'}, which does not exist"
    with pytest.raises(SourceError, match=re.escape(gone)):
        _replay(f"file:{tmp_path / 'moved.wav'}")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("replace the bearing\n")
    with pytest.raises(SourceError, match=r"notes: no recordings to play \(0 recording\(s\) in it, skip=0\); "
                                          r"recordings are .wav, .npy"):
        _replay(f"file:{tmp_path / 'notes'}")  # was "unknown recording type"
    (tmp_path / "bad.wav").write_bytes(b"RIFF....nonsense")
    with pytest.raises(SourceError, match="not a readable WAV"):
        _replay(f"file:{tmp_path / 'bad.wav'}")
    with pytest.raises(ConfigError, match="not a recording this reads .*save it as WAV, NPY, MATLAB .mat, TDMS, FLAC"):
        make_source("file:recording.m4a")
    # damaged WAV headers: cut short, saying 0 channels (scipy divides by it), saying 0 Hz
    damaged_wavs(tmp_path, 12000, 4000)
    with pytest.raises(SourceError, match=r"not a readable WAV file \(the header is cut short"):
        _replay(f"file:{tmp_path / 'cut.wav'}")
    with pytest.raises(SourceError, match=r"not a readable WAV file \(the header says 0 channels\)"):
        _replay(f"file:{tmp_path / 'no-channels.wav'}")
    with pytest.raises(SourceError, match="says its sample rate is 0 Hz.*rate=12000"):
        _replay(f"file:{tmp_path / 'zero-hz.wav'}")
    _, frames = _replay(f"file:{tmp_path / 'zero-hz.wav'}?rate=12000&fast=1")  # the rate given: it plays
    assert sum(f.n for f in frames) == 4000 and frames[0].sample_rate == 12000


def _logger_csv(path, header, t, columns, fmt="%.6f"):
    rows = np.column_stack([t, *columns])
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt=fmt)


def test_a_csvs_speed_column_is_the_frames_shaft_speed_not_a_channel(tmp_path):
    # a logger's export with a tachometer's speed beside the sensors: the speed column was monitored
    # as a sensor of its own (a slow ramp in rpm), and no frame carried the machine's speed
    n, rate = 8192, 8000
    t = np.arange(n) / rate
    x = np.sin(2 * np.pi * 100 * t).astype(np.float32)
    y = (0.5 * np.cos(2 * np.pi * 300 * t)).astype(np.float32)
    rpm = np.linspace(1800.0, 1500.0, n)
    rpm[5000:5100] = np.nan  # the tachometer lost its pulses for a moment
    rpm[7000] = -1.0  # and gave one reading that is no speed
    _logger_csv(tmp_path / "run.csv", "time,DE,Speed (rpm),FE", t, [x, rpm, y], fmt="%.9g")
    src, frames = _replay(f"file:{tmp_path / 'run.csv'}?fast=1&chunk=1024")
    assert src.streams == ["run/DE", "run/FE"] and frames[0].names == ("DE", "FE")
    np.testing.assert_allclose(np.concatenate([f.samples for f in frames]), np.stack([x, y], axis=1), rtol=1e-6,
                               atol=1e-7)
    means = [float(np.mean(rpm[i : i + 1024])) for i in range(0, n, 1024)]
    assert [f.rpm is None for f in frames] == [False] * 4 + [True, False, True, False]  # rows 4096..5119, 6144..7167
    assert [f.rpm for f in frames if f.rpm is not None] == pytest.approx(
        [m for k, m in enumerate(means) if k not in (4, 6)], rel=1e-6)
    assert [m for _, m in src.notes if "hold no shaft speed" in m] and len(src.notes) == 1
    # start / duration cut the speeds with the samples
    _, frames = _replay(f"file:{tmp_path / 'run.csv'}?fast=1&chunk=1024&start=0.128&duration=0.128")
    assert [f.rpm for f in frames] == pytest.approx([float(rpm[1024:2048].mean())], rel=1e-6)
    _logger_csv(tmp_path / "two.csv", "t,vib,rpm,tacho_rpm", t, [x, rpm, rpm])
    with pytest.raises(SourceError, match="'rpm', 'tacho_rpm' all look like the shaft speed"):
        _replay(f"file:{tmp_path / 'two.csv'}?fast=1")
    _logger_csv(tmp_path / "only.csv", "t,rpm", t, [rpm])
    with pytest.raises(SourceError, match="its only column 'rpm' is a shaft speed"):
        _replay(f"file:{tmp_path / 'only.csv'}?fast=1")


def test_a_data_loggers_csv_is_monitored_at_the_rate_of_its_time_column_under_its_column_names(tmp_path):
    # a logger's export: a time column first, then one column per sensor, named in a header row.
    # The time column was monitored as a sensor of its own (a ramp), the rate had to be given, and
    # the channels were ch0, ch1, ch2 whatever the header said
    n, rate = 16000, 8000
    t = np.arange(n) / rate
    x = np.sin(2 * np.pi * 100 * t).astype(np.float32)
    y = (0.5 * np.cos(2 * np.pi * 300 * t)).astype(np.float32)
    _logger_csv(tmp_path / "log.csv", "Time (s),accel x,accel_y", t, [x, y], fmt="%.9g")
    src, frames = _replay(f"file:{tmp_path / 'log.csv'}?fast=1")
    assert frames[0].sample_rate == 8000.0
    assert src.streams == ["log/accel_x", "log/accel_y"]
    got = np.concatenate([f.samples for f in frames])
    np.testing.assert_allclose(got, np.stack([x, y], axis=1), rtol=1e-6, atol=1e-7)
    _, frames = _replay(f"file:{tmp_path / 'log.csv'}?fast=1&rate=8000")  # the same rate given: fine
    assert frames[0].sample_rate == 8000.0
    with pytest.raises(ConfigError, match=r"rate=12000 Hz, but its time column 'Time \(s\)' says 8000 Hz"):
        _replay(f"file:{tmp_path / 'log.csv'}?fast=1&rate=12000")

    _logger_csv(tmp_path / "ms.csv", "time_ms,vib", 1000 * t, [x])  # milliseconds, rounded to 1 us
    src, frames = _replay(f"file:{tmp_path / 'ms.csv'}?fast=1")
    assert frames[0].sample_rate == 8000.0 and src.streams == ["ms"] and sum(f.n for f in frames) == n

    keep = np.r_[0:100, 200:n]  # 100 rows lost: the samples after them are not at the rate
    _logger_csv(tmp_path / "gap.csv", "t,vib", t[keep], [x[keep]])
    with pytest.raises(SourceError, match=r"time column 't' is not evenly spaced \(data row 101 is at"):
        _replay(f"file:{tmp_path / 'gap.csv'}?fast=1")

    _logger_csv(tmp_path / "plain.csv", "left,right", x, [y])  # no time column: two sensors, as before
    src, _ = _replay(f"file:{tmp_path / 'plain.csv'}?fast=1&rate=8000")
    assert src.streams == ["plain/left", "plain/right"]


def test_a_csv_written_with_decimal_commas_gives_the_samples_of_one_with_points(tmp_path):
    # Excel's export where the decimal sign is a comma separates the columns with semicolons (or a
    # logger's with tabs): "0,024634;0,5". It was refused ("could not convert string '0,000000'")
    n, rate = 4000, 8000
    t = np.arange(n) / rate
    x = np.sin(2 * np.pi * 100 * t)
    y = 0.5 * np.cos(2 * np.pi * 300 * t)
    _logger_csv(tmp_path / "points.csv", "time,accel_x,accel_y", t, [x, y])
    _, want = _replay(f"file:{tmp_path / 'points.csv'}?fast=1")
    for name, sep in (("semicolons.csv", ";"), ("tabs.csv", "\t")):
        lines = (tmp_path / "points.csv").read_text().splitlines()
        (tmp_path / name).write_text("\n".join(line.replace(",", sep).replace(".", ",") for line in lines) + "\n")
        src, got = _replay(f"file:{tmp_path / name}?fast=1")
        assert got[0].sample_rate == 8000.0 and src.streams == [f"{name[:-4]}/accel_x", f"{name[:-4]}/accel_y"]
        assert np.array_equal(np.concatenate([f.samples for f in got]), np.concatenate([f.samples for f in want]))
    # such a logger names its time column in its own language: "Zeit (s)" is one too
    lines = (tmp_path / "semicolons.csv").read_text().splitlines()
    (tmp_path / "de.csv").write_text("\n".join(["Zeit (s);Beschleunigung", *(";".join(r.split(";")[:2])
                                                                             for r in lines[1:])]) + "\n")
    src, got = _replay(f"file:{tmp_path / 'de.csv'}?fast=1")
    assert got[0].sample_rate == 8000.0 and src.streams == ["de"]
    assert np.array_equal(np.concatenate([f.samples for f in got])[:, 0], np.concatenate([f.samples for f in want])[:, 0])


def test_channel_picks_a_csvs_column_by_its_number_in_the_file_as_training_does(tmp_path):
    # ?channel=K counts a recording's columns as a training manifest's channel does (the time column
    # is 0), picks that sensor alone under the id it has among all, and refuses the time and speed
    # columns and a column the file lacks in one line
    n, rate = 4000, 8000
    t = np.arange(n) / rate
    x, y = np.sin(2 * np.pi * 100 * t), 0.5 * np.cos(2 * np.pi * 300 * t)
    _logger_csv(tmp_path / "log.csv", "time,accel_x,rpm,accel_y", t, [x, np.full(n, 1750.0), y])
    _, every = _replay(f"file:{tmp_path / 'log.csv'}?fast=1")
    all_cols = np.concatenate([f.samples for f in every])
    for k, sid, col in ((1, "log/accel_x", 0), (3, "log/accel_y", 1)):
        src, frames = _replay(f"file:{tmp_path / 'log.csv'}?fast=1&channel={k}")
        assert src.streams == [sid] and frames[0].rpm == 1750.0
        assert np.array_equal(np.concatenate([f.samples for f in frames])[:, 0], all_cols[:, col])
    for k, said in ((0, "channel=0 is its time column 'time'"), (2, "channel=2 is its shaft speed column 'rpm'"),
                    (4, "channel=4, but it has 4 column")):
        with pytest.raises(ConfigError, match=said):
            _replay(f"file:{tmp_path / 'log.csv'}?fast=1&channel={k}")
