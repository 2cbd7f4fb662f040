"""examples/cpp (LibTorch, no Python at run time) prints the label drsn-stream gives the same window.

Builds the example once into a temporary folder (about half a minute, niced); skips with the reason
where cmake, a C++ compiler or torch's CMake files are missing, and without ../shared/data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DATA, cwru_signal, require_cwru

from drsn_stream.dsp.normalize import normalize
from drsn_stream.engine.runner import Runner
from drsn_stream.models.artifact import builtin_dir, load_artifact

# one worker under pytest-xdist: the example is built once, by the module's fixture
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cpp-example")]
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cpp"
# held-out part of each recording (the artifact's test split is its last quarter); 12 kHz files
CWRU_FILES = ("12k_Drive_End_B007_0_118.mat", "12k_Drive_End_IR021_0_209.mat",
              "12k_Drive_End_OR014@6_0_197.mat", "12k_Drive_End_IR007_0_105.mat")


# session, not module: under --dist loadgroup a worker may run other modules' tests between these,
# and a module fixture would be torn down and the example built again each time
@pytest.fixture(scope="session")
def classify(tmp_path_factory) -> Path:
    cmake = shutil.which("cmake")
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    prefix = Path(torch.utils.cmake_prefix_path)
    if cmake is None or compiler is None:
        pytest.skip(f"building examples/cpp needs cmake and a C++ compiler (cmake: {cmake}, c++: {compiler}); "
                    "apt-get install cmake g++")
    if not (prefix / "Torch" / "TorchConfig.cmake").is_file():
        pytest.skip(f"this torch ships no LibTorch CMake files under {prefix}")
    build = tmp_path_factory.mktemp("cpp-build")
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    for cmd in ([cmake, "-S", str(EXAMPLE), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}",
                 "-DCMAKE_BUILD_TYPE=Release"], [cmake, "--build", str(build), "-j", "2"]):
        done = subprocess.run(nice + cmd, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    exe = build / "drsn_classify"
    assert exe.is_file()
    return exe


def run_cpp(exe: Path, artifact: str, samples: Path, offset: int = 0) -> tuple[str, float, float]:
    done = subprocess.run([str(exe), str(builtin_dir() / f"{artifact}.pt"), str(samples), str(offset)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    label, conf, noise = done.stdout.split()
    return label, float(conf), float(noise)


def test_cpp_prints_the_label_drsn_stream_gives_cwru_windows(classify, tmp_path, cli_in_process):
    require_cwru()
    from scipy.io import wavfile

    window = 2048
    parts = []
    for name in CWRU_FILES:
        x = cwru_signal(name)
        start = int(0.8 * len(x))
        parts.append(x[start : start + window])
    signal = np.concatenate(parts).astype(np.float32)  # in g, 12 kHz, one window per file
    signal.tofile(tmp_path / "cwru.f32")
    wavfile.write(tmp_path / "cwru.wav", 12000, signal)

    # drsn-stream itself, through its file source and live path, one window per hop
    done = cli_in_process("--source", f"file:{tmp_path / 'cwru.wav'}", "--fast", "--hop", str(window), "--jsonl", "-",
                          "--threads", "1")
    assert done.returncode == 0, done.stderr
    preds = sorted((json.loads(line) for line in done.stdout.splitlines() if '"prediction"' in line),
                   key=lambda p: p["index"])
    assert len(preds) == len(CWRU_FILES)
    for i, p in enumerate(preds):
        label, conf, noise = run_cpp(classify, "bearing-cwru", tmp_path / "cwru.f32", i * window)
        want = p.get("model_label", p["label"])  # the C++ example has no "unknown": the network's own label
        assert label == want, f"window {i} ({CWRU_FILES[i]}): C++ {label}, drsn-stream {want}"
        assert abs(conf - p["confidence"]) < 2e-3 and abs(noise - p["noise_index"]) < 2e-3
    # the windows are of four different faults: a label mix-up would show
    assert len({p.get("model_label", p["label"]) for p in preds}) == len(CWRU_FILES)


def test_cpp_handles_the_speech_model_and_its_rms_normalization(classify, tmp_path):
    wav = DATA / "fsdd" / "recordings" / "3_theo_2.wav"  # a take of FSDD's test split (takes 0-4)
    if not wav.is_file():
        pytest.skip(f"FSDD data not found at {wav.parent} (set DRSN_DATA to the shared data folder)")
    from scipy.io import wavfile

    rate, data = wavfile.read(wav)
    module, meta = load_artifact("digits-fsdd")
    assert rate == meta.sample_rate
    x = np.zeros(meta.window, np.float32)
    clip = data.astype(np.float32)[: meta.window] / 32768.0
    start = (meta.window - len(clip)) // 2
    x[start : start + len(clip)] = clip  # the digit centred in 1 s of silence, full-scale units
    x.tofile(tmp_path / "digit.f32")
    probs, noise = Runner(module, window=meta.window, device="cpu", threads=1, scores=meta.scores).infer(
        normalize(x[None], meta.normalization))
    label, conf, cnoise = run_cpp(classify, "digits-fsdd", tmp_path / "digit.f32")
    assert label == meta.labels[int(probs[0].argmax())]
    assert abs(conf - float(probs[0].max())) < 2e-3 and abs(cnoise - float(noise[0])) < 2e-3


def test_cpp_says_what_is_wrong_with_a_short_file(classify, tmp_path):
    np.zeros(100, np.float32).tofile(tmp_path / "short.f32")
    done = subprocess.run([str(classify), str(builtin_dir() / "bearing-cwru.pt"), str(tmp_path / "short.f32")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "holds 100 samples; a window needs 2048" in done.stderr
