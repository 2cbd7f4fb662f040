"""``drsn-stream export --triton``: a Triton model repository that Triton's schema accepts and whose
model.pt, loaded with plain ``torch.jit.load``, labels raw windows as the monitor does.

Triton itself is not run here (no server in CI); its config schema is (tritonclient ships
``model_config_pb2``, installed by the dev extra; the schema test skips without it).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CWRU, DATA, require_cwru
from torch import Tensor, nn

from drsn_stream.cli import main as cli_main
from drsn_stream.dsp.normalize import normalize
from drsn_stream.engine.runner import Runner
from drsn_stream.models.artifact import META_KEY, load_artifact, read_meta, save_artifact
from drsn_stream.models.triton import export_triton

ROOT = Path(__file__).resolve().parents[1]
# Held-out part of each recording (the artifact's test split is the last quarter); 12 kHz files of
# four different faults, so a mix-up of windows or labels shows.
CWRU_FILES = ("12k_Drive_End_B007_0_118.mat", "12k_Drive_End_IR021_0_209.mat",
              "12k_Drive_End_OR014@6_0_197.mat", "12k_Drive_End_IR007_0_105.mat")
CWRU_START_S = 8.0
# FSDD's test split (takes 0-4), one take of each digit, several speakers
FSDD_TAKES = ("0_george_0", "1_jackson_1", "2_lucas_2", "3_nicolas_3", "4_theo_4",
              "5_yweweler_0", "6_george_1", "7_jackson_2", "8_lucas_3", "9_nicolas_4")

# Runs in a fresh, isolated interpreter: torch and numpy only, then proves drsn_stream never got imported.
PLAIN_TORCH = r"""
import sys, numpy as np, torch
model_pt, windows, out = sys.argv[1:4]
m = torch.jit.load(model_pt)
with torch.no_grad():
    probs, noise = m(torch.from_numpy(np.load(windows, allow_pickle=False)))
assert not any(k.startswith("drsn_stream") for k in sys.modules), "model.pt pulled in drsn_stream"
np.savez(out, probs=probs.numpy(), noise=noise.numpy())
"""


def model_config_pb2():
    """Triton's ModelConfig protobuf module as tritonclient ships it; skips when tritonclient is absent."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2

        return pb2
    except ImportError:
        pass
    except RuntimeError:  # tritonclient without its grpc extra refuses the package import; the file is there
        pass
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or spec.origin is None:
        pytest.skip("tritonclient is not installed (pip install -e '.[dev]' or pip install 'tritonclient[grpc]'); "
                    "it ships Triton's model_config schema")
    path = Path(spec.origin).parent / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        pytest.skip(f"this tritonclient has no {path.name}")
    mod_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """One repository with both built-in models, written through the command line."""
    root = tmp_path_factory.mktemp("triton-repo")
    assert cli_main(["export", "--triton", str(root), "--model", "bearing-cwru"]) == 0
    assert cli_main(["export", "--triton", str(root), "--model", "digits-fsdd", "--gpu", "--instances", "2",
                     "--max-batch-size", "64", "--max-queue-delay-us", "500"]) == 0
    return root


def plain_torch(model_pt: Path, windows: np.ndarray, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    np.save(tmp_path / "windows.npy", np.ascontiguousarray(windows, dtype=np.float32))
    done = subprocess.run([sys.executable, "-I", "-c", PLAIN_TORCH, str(model_pt), str(tmp_path / "windows.npy"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        return z["probs"], z["noise"]


def monitor_predictions(sources: list[str], model: str, hop: int, cli_in_process) -> list[dict]:
    args = ["--model", model, "--fast", "--hop", str(hop), "--jsonl", "-", "--threads", "1"]
    for s in sources:
        args += ["--source", s]
    done = cli_in_process(*args)  # the monitor's labels; the model.pt side runs in a clean interpreter
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if '"prediction"' in line]


# ---------------------------------------------------------------------------- the repository


def test_config_parses_with_tritons_own_schema(repo):
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    for name, kind, max_batch, delay, count in (("bearing-cwru", "KIND_CPU", 256, 100, 1),
                                                ("digits-fsdd", "KIND_GPU", 64, 500, 2)):
        meta = read_meta(name)
        cfg = text_format.Parse((repo / name / "config.pbtxt").read_text(), pb2.ModelConfig())  # unknown fields raise
        assert cfg.name == name and cfg.platform == "pytorch_libtorch" and cfg.max_batch_size == max_batch
        (inp,) = cfg.input
        assert (inp.name, inp.data_type, list(inp.dims)) == ("INPUT__0", pb2.TYPE_FP32, [meta.window])
        probs, noise = cfg.output
        assert (probs.name, probs.data_type, list(probs.dims)) == ("OUTPUT__0", pb2.TYPE_FP32, [meta.num_classes])
        assert (noise.name, noise.data_type, list(noise.dims)) == ("OUTPUT__1", pb2.TYPE_FP32, [1])
        assert noise.HasField("reshape") and list(noise.reshape.shape) == []  # one scalar per window
        labels = (repo / name / probs.label_filename).read_text().splitlines()
        assert labels == meta.labels
        assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == delay
        (group,) = cfg.instance_group
        assert group.kind == pb2.ModelInstanceGroup.Kind.Value(kind) and group.count == count
        assert (repo / name / "1" / "model.pt").is_file()


def test_a_batch_of_n_gives_n_rows_of_probabilities(repo):
    m = torch.jit.load(str(repo / "bearing-cwru" / "1" / "model.pt"))
    gen = torch.Generator().manual_seed(0)
    for n in (1, 7):
        with torch.no_grad():
            probs, noise = m(0.3 * torch.randn(n, 2048, generator=gen) + 0.1)
        assert probs.shape == (n, 10) and noise.shape == (n,)
        assert torch.allclose(probs.sum(1), torch.ones(n), atol=1e-5) and bool((probs >= 0).all())


def test_a_wrong_length_input_says_what_to_do(repo):
    m = torch.jit.load(str(repo / "bearing-cwru" / "1" / "model.pt"))
    for bad in (torch.zeros(2, 2000), torch.zeros(2048)):
        with pytest.raises(Exception, match=r"\(batch, 2048\) at 12000 Hz.*resample"):
            m(bad)


def test_drsn_stream_reads_model_pt_as_an_artifact(repo):
    from test_artifact_format import SCHEMA, validate

    for name in ("bearing-cwru", "digits-fsdd"):
        pt = repo / name / "1" / "model.pt"
        with zipfile.ZipFile(pt) as zf:
            (entry,) = [n for n in zf.namelist() if n.endswith("/extra/" + META_KEY)]
            assert validate(json.loads(zf.read(entry)), SCHEMA) == []
        module, meta = load_artifact(pt)
        original = read_meta(name)
        assert meta.normalization == {"kind": "none"} and meta.scores == "probs"
        assert (meta.labels, meta.sample_rate, meta.window) == (original.labels, original.sample_rate, original.window)


# ---------------------------------------------------------------------------- real windows vs the monitor


@pytest.mark.slow
def test_model_pt_labels_cwru_windows_as_the_monitor_does(repo, tmp_path, cli_in_process):
    from scipy.io import loadmat

    require_cwru()
    window, rate = 2048, 12000
    sources = [f"file:{CWRU / name}?start={CWRU_START_S}&duration=1" for name in CWRU_FILES]
    preds = monitor_predictions(sources, "bearing-cwru", window, cli_in_process)
    windows, expected = [], []
    for name in CWRU_FILES:
        mat = loadmat(CWRU / name)
        x = np.asarray(mat[next(k for k in mat if k.endswith("_DE_time"))], dtype=np.float32).ravel()
        a = int(round(CWRU_START_S * rate))
        mine = sorted((p for p in preds if p["stream"] == Path(name).stem), key=lambda p: p["index"])
        assert len(mine) == 5, f"{name}: {len(mine)} predictions from the monitor"
        for p in mine:
            s = a + p["index"] * window
            windows.append(x[s : s + window])  # raw samples in g, as the file source reads them
            expected.append(p)
    probs, noise = plain_torch(repo / "bearing-cwru" / "1" / "model.pt", np.stack(windows), tmp_path)
    assert probs.shape == (len(expected), 10) and noise.shape == (len(expected),)
    labels = read_meta("bearing-cwru").labels
    for i, p in enumerate(expected):
        # the Triton model has no "unknown": compare with the network's own label where the monitor refused it
        want = p.get("model_label", p["label"])
        assert labels[int(probs[i].argmax())] == want, f"window {i} ({p['stream']} #{p['index']})"
        assert abs(float(probs[i].max()) - p["confidence"]) < 2e-3 and abs(float(noise[i]) - p["noise_index"]) < 2e-3
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert len({p.get("model_label", p["label"]) for p in expected}) == len(CWRU_FILES)


@pytest.mark.slow
def test_model_pt_labels_fsdd_takes_as_the_monitor_does(repo, tmp_path, cli_in_process):
    from scipy.io import wavfile

    rec = DATA / "fsdd" / "recordings"
    if not (rec / f"{FSDD_TAKES[0]}.wav").is_file():
        pytest.skip(f"FSDD data not found at {rec} (set DRSN_DATA to the shared data folder)")
    window = 8000
    parts = []
    for take in FSDD_TAKES:
        rate, d = wavfile.read(rec / f"{take}.wav")
        assert rate == 8000 and d.dtype == np.int16
        w = np.zeros(window, np.int16)
        d = d[:window]
        s = (window - len(d)) // 2
        w[s : s + len(d)] = d  # the digit centred in 1 s of silence
        parts.append(w)
    parts.append(np.zeros(window, np.int16))  # and one silent second
    wavfile.write(tmp_path / "digits.wav", 8000, np.concatenate(parts))
    preds = sorted(monitor_predictions([f"file:{tmp_path / 'digits.wav'}"], "digits-fsdd", window, cli_in_process),
                   key=lambda p: p["index"])
    assert [p["index"] for p in preds] == list(range(len(parts)))
    raw = np.stack(parts).astype(np.float32) / 32768.0  # full-scale units, as the file source gives them
    probs, noise = plain_torch(repo / "digits-fsdd" / "1" / "model.pt", raw, tmp_path)
    labels = read_meta("digits-fsdd").labels
    got = [labels[int(r.argmax())] for r in probs]
    # the model's own label (a window the sensor-health check flags, here for its digital silence,
    # is published as "check_sensor" with the model's label in "model_label")
    assert got == [p.get("model_label", p["label"]) for p in preds]
    for i, p in enumerate(preds):
        assert abs(float(probs[i].max()) - p["confidence"]) < 2e-3 and abs(float(noise[i]) - p["noise_index"]) < 2e-3
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert got[-1] == "_silence_" and len(set(got)) >= 8  # quiet stays quiet: the rms floor is baked in


# ---------------------------------------------------------------------------- every normalization and score kind


class _Passthrough(nn.Module):
    """Returns its (normalized) input as "probs", so the wrapper's normalization shows sample by sample."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return x, torch.zeros(x.shape[0]), x[:, :2]


class _Tiny(nn.Module):
    """A linear classifier whose first output is logits, log-probabilities or probabilities, plus a
    third output (pooled features), as later networks return."""

    def __init__(self, window: int, classes: int, scores: str) -> None:
        super().__init__()
        self.lin = nn.Linear(window, classes)
        self.scores = scores

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.lin(x)
        if self.scores == "log_probs":
            z = torch.log_softmax(z, dim=1)
        elif self.scores == "probs":
            z = torch.softmax(z, dim=1)
        return z, (x.abs() < 0.5).float().mean(1), x.mean(1, keepdim=True)


def _raw_windows(window: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.stack([
        3.0 + 0.01 * rng.standard_normal(window),  # offset and small: zscore's centring and scale
        2e-4 * rng.standard_normal(window),  # far below an rms floor: divided by the floor
        0.5 * rng.standard_normal(window),  # above it: divided by its own rms
        np.full(window, 1.25),  # constant: zscore's epsilon
        np.zeros(window),  # silent
    ]).astype(np.float32)


SPECS = ({"kind": "zscore"}, {"kind": "rms", "floor": 0.005}, {"kind": "affine", "mean": 0.7, "std": 0.3},
         {"kind": "none"})


@pytest.mark.parametrize("spec", SPECS, ids=[s["kind"] for s in SPECS])
def test_the_baked_in_normalization_is_drsn_streams(spec, tmp_path):
    window = 64
    meta = {"name": "pass", "model": "passthrough", "labels": [f"c{i}" for i in range(window)], "sample_rate": 1000,
            "window": window, "hop": window, "input": {"kind": "raw"}, "normalization": spec,
            "outputs": {"scores": "probs"}}
    save_artifact(_Passthrough(), tmp_path / "pass.pt", meta)
    done = export_triton(tmp_path / "repo", tmp_path / "pass.pt")
    raw = _raw_windows(window)
    with torch.no_grad():
        got, _ = torch.jit.load(str(done.model))(torch.from_numpy(raw))
    want = normalize(raw, spec)
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-7, atol=1e-12)


@pytest.mark.parametrize("scores", ("logits", "log_probs", "probs"))
def test_scores_become_probabilities_and_extra_outputs_are_ignored(scores, tmp_path):
    window, classes = 32, 5
    torch.manual_seed(0)
    net = _Tiny(window, classes, scores)
    meta = {"name": f"tiny-{scores}", "model": "tiny", "labels": list("abcde"), "sample_rate": 1000,
            "window": window, "hop": window, "input": {"kind": "raw"}, "normalization": {"kind": "zscore"},
            "outputs": {"scores": scores}}
    save_artifact(net, tmp_path / "tiny.pt", meta)
    done = export_triton(tmp_path / "repo", tmp_path / "tiny.pt", name="tiny")
    raw = _raw_windows(window)
    with torch.no_grad():
        probs, noise = torch.jit.load(str(done.model))(torch.from_numpy(raw))
        first, want_noise, _ = net.eval()(torch.from_numpy(normalize(raw, {"kind": "zscore"})))
    want = first if scores == "probs" else torch.softmax(first, dim=1)  # what the monitor's runner does
    torch.testing.assert_close(probs, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(noise, want_noise)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(raw)), rtol=0, atol=1e-5)


def test_model_pt_keeps_metadata_it_does_not_know_and_drops_what_it_does_not_return(tmp_path):
    window = 32
    torch.manual_seed(0)
    meta = {"name": "tiny", "model": "tiny", "labels": list("abcde"), "sample_rate": 1000, "window": window,
            "hop": window, "input": {"kind": "raw"}, "normalization": {"kind": "zscore"},
            "outputs": {"scores": "logits", "features": 1},  # a third output: pooled features
            "unknown": {"kind": "class-gaussian", "threshold": 1.0},  # statistics of those features
            "site_notes": {"line": 3}}  # a member this drsn-stream does not know
    save_artifact(_Tiny(window, 5, "logits"), tmp_path / "tiny.pt", meta)
    done = export_triton(tmp_path / "repo", tmp_path / "tiny.pt")
    with zipfile.ZipFile(done.model) as zf:
        (entry,) = [n for n in zf.namelist() if n.endswith("/extra/" + META_KEY)]
        d = json.loads(zf.read(entry))
    assert d["site_notes"] == {"line": 3}
    assert d["outputs"] == {"scores": "probs"} and "unknown" not in d
    assert d["triton"]["dropped"] == ["features", "unknown"] and d["triton"]["scores_inside"] == "logits"
    _, wmeta = load_artifact(done.model)  # and drsn-stream still reads it
    assert wmeta.scores == "probs" and wmeta.labels == list("abcde")


def test_runner_on_model_pt_gives_the_artifacts_probabilities(repo):
    """drsn-stream's own runner on model.pt (normalization none) agrees with the artifact."""
    raw = _raw_windows(2048)
    wrapped, wmeta = load_artifact(repo / "bearing-cwru" / "1" / "model.pt")
    module, meta = load_artifact("bearing-cwru")
    p1, n1 = Runner(wrapped, window=2048, device="cpu", threads=1, scores=wmeta.scores).infer(
        normalize(raw, wmeta.normalization))
    p2, n2 = Runner(module, window=2048, device="cpu", threads=1, scores=meta.scores).infer(
        normalize(raw, meta.normalization))
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    np.testing.assert_allclose(n1, n2, atol=1e-6)


# ---------------------------------------------------------------------------- the command line


def test_export_says_which_flags_go_together(tmp_path, capsys):
    def err() -> str:
        return " ".join(capsys.readouterr().err.split())  # the console wraps long lines

    assert cli_main(["export", "--triton", str(tmp_path)]) == 2
    assert "needs both --triton DIR and --model NAME" in err()
    assert cli_main(["export", "--triton", str(tmp_path), "--model", "no-such-model"]) == 2
    assert "built-ins: bearing-cwru, digits-fsdd" in err()
    assert cli_main(["export", "--triton", str(tmp_path), "--model", "bearing-cwru", "--out", "x.pt"]) == 2
    assert "give one pair" in err()
    assert cli_main(["export"]) == 2
    assert "give --checkpoint CK --out OUT.pt" in err()
    assert not any(tmp_path.iterdir())
