"""The tools on odd input: a broken recording, a bad flag, an output path that cannot be written.

Each test runs the real script as a user does (``python tools/NAME.py ...`` from the repository
root) on a small CWRU folder built in tmp_path (links to the real files, one of them rewritten
broken), and checks what the user sees: exit status 2 and one line ``tools/NAME.py: error: ...``
that names the problem, no traceback, and no file written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

REPO = Path(__file__).resolve().parents[1]
NORMAL = "normal_0_97.mat"
OR007 = "12k_Drive_End_OR007@6_0_130.mat"
IR007 = "12k_Drive_End_IR007_0_105.mat"


def tool(name: str, *args: str, env: dict[str, str], cwd: Path = REPO, timeout: float = 120):
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def refused(proc: subprocess.CompletedProcess, name: str, *words: str) -> str:
    """The one error line of a refused run (exit 2, no traceback); it names every one of ``words``."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, proc.stderr
    line = errors[0]
    assert line.startswith(f"tools/{name}: error: "), line
    for w in words:
        assert w.lower() in line.lower(), line
    return line


def cwru_folder(data_dir: Path, dest: Path, names: list[str], **broken) -> Path:
    """``dest`` with links to the CWRU files ``names``; ``broken[name]`` (a function of the
    drive-end samples (n, 1) -> new samples) rewrites that file as a new file instead."""
    dest.mkdir(parents=True)
    for n in names:
        (dest / n).symlink_to(data_dir / "cwru" / n)
    for n, change in broken.items():
        mat = scipy.io.loadmat(data_dir / "cwru" / n)
        mat = {k: v for k, v in mat.items() if not k.startswith("__")}
        key = next(k for k in mat if k.endswith("_DE_time"))
        mat[key] = change(np.array(mat[key], dtype=np.float64))
        if (dest / n).is_symlink():
            (dest / n).unlink()  # never write through the link into the shared data
        scipy.io.savemat(dest / n, mat)
    return dest


def nan_at(start: int, stop: int):
    def change(x: np.ndarray) -> np.ndarray:
        x[start:stop] = np.nan
        return x
    return change


def all_nan(x: np.ndarray) -> np.ndarray:
    return np.full_like(x, np.nan)


TRAINED_ON = [  # the files bearing-cwru was trained on (metadata training.data.files)
    "12k_Drive_End_B007_0_118.mat", "12k_Drive_End_B014_0_185.mat", "12k_Drive_End_B021_0_222.mat",
    IR007, "12k_Drive_End_IR014_0_169.mat", "12k_Drive_End_IR021_0_209.mat", NORMAL, OR007,
    "12k_Drive_End_OR014@6_0_197.mat", "12k_Drive_End_OR021@6_0_234.mat",
]


# -- fit_unknown.py ---------------------------------------------------------------------------

@pytest.mark.slow
def test_fit_unknown_refuses_nan_samples_and_writes_nothing(data_dir, tmp_path, child_env):
    # it wrote a model whose unknown threshold was NaN: unknown detection silently off
    folder = cwru_folder(data_dir, tmp_path / "cw", [n for n in TRAINED_ON if n != NORMAL],
                         **{NORMAL: nan_at(1000, 3000)})
    out = tmp_path / "m.pt"
    proc = tool("fit_unknown.py", "drsn_stream/artifacts/bearing-cwru.pt", "--data", str(folder), "--out", str(out),
                env=child_env)
    refused(proc, "fit_unknown.py", NORMAL, "NaN")
    assert list(tmp_path.glob("m.pt*")) == []


def test_fit_unknown_checks_out_before_the_run(tmp_path, child_env):
    (tmp_path / "dir.pt").mkdir()
    proc = tool("fit_unknown.py", "drsn_stream/artifacts/bearing-cwru.pt", "--out", str(tmp_path / "dir.pt"),
                env=child_env)
    refused(proc, "fit_unknown.py", "folder")
    assert [p.name for p in tmp_path.iterdir()] == ["dir.pt"]  # no stray .tmp
    proc = tool("fit_unknown.py", "drsn_stream/artifacts/bearing-cwru.pt", "--out", str(tmp_path / "no" / "m.pt"),
                env=child_env)
    refused(proc, "fit_unknown.py", "not writable")


# -- eval_baseline.py -------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--margin", "nan"], ["--margin", "finite"]),
    (["--margin", "0"], ["--margin"]),
    (["--margin", "inf"], ["--margin"]),
    (["--learn", "1.5"], ["--learn"]),
    (["--learn", "nan"], ["--learn"]),
    (["--model", "digits-fsdd"], ["not a bearing model"]),
])
def test_eval_baseline_refuses_bad_flags(args, words, tmp_path, child_env):
    proc = tool("eval_baseline.py", *args, "--data", str(tmp_path), "--json", str(tmp_path / "r.json"), env=child_env)
    refused(proc, "eval_baseline.py", *words)
    assert not (tmp_path / "r.json").exists()


def test_eval_baseline_checks_json_before_the_run(tmp_path, child_env):
    proc = tool("eval_baseline.py", "--data", str(tmp_path), "--json", str(tmp_path), env=child_env)
    refused(proc, "eval_baseline.py", "--json")


@pytest.mark.slow
def test_eval_baseline_learn_too_small_is_one_line(data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [NORMAL])
    proc = tool("eval_baseline.py", "--data", str(folder), "--learn", "0.01", env=child_env)
    refused(proc, "eval_baseline.py", "--learn 0.01")


@pytest.mark.slow
def test_eval_baseline_steady_learns_each_recording_as_one_machine(data_dir, tmp_path, child_env):
    """--steady: a steady recording is one operating state (not cut in parts), and the figures
    land in --json with the rest."""
    folder = cwru_folder(data_dir, tmp_path / "cw", [NORMAL, IR007])
    out = tmp_path / "r.json"
    proc = tool("eval_baseline.py", "--data", str(folder), "--steady", "--json", str(out), env=child_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 of 2 split into states" in proc.stdout, proc.stdout
    import json

    r = json.loads(out.read_text())["steady"]
    assert r["recordings"] == 2 and r["split"] == [] and all(v["states"] == 1 for v in r["rows"].values())


@pytest.mark.slow
def test_eval_baseline_does_not_count_nan_windows_as_healthy(data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [IR007], **{NORMAL: nan_at(200000, 243938)})
    out = tmp_path / "r.json"
    proc = tool("eval_baseline.py", "--data", str(folder), "--json", str(out), env=child_env)
    refused(proc, "eval_baseline.py", NORMAL, "NaN")
    assert not out.exists()


@pytest.mark.slow
def test_eval_baseline_with_no_fault_recording_says_so(data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [NORMAL])
    proc = tool("eval_baseline.py", "--data", str(folder), env=child_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no fault recordings" in proc.stdout
    assert "every fault recording" not in proc.stdout


# -- finetune_time.py, learning_curve.py ------------------------------------------------------

def test_finetune_time_reads_a_relative_data_folder(data_dir, tmp_path, child_env):
    # the manifest is written in a temp folder: a relative --data must not be read from there
    cwru_folder(data_dir, tmp_path / "cw", [NORMAL])
    proc = tool("finetune_time.py", "--no-baseline", "--data", "cw", env=child_env, cwd=tmp_path)
    line = refused(proc, "finetune_time.py", "at least two")
    assert "not found" not in line


@pytest.mark.parametrize("flag", ["--seeds", "--windows", "--scratch-windows"])
def test_learning_curve_refuses_bad_counts_before_loading(flag, tmp_path, child_env):
    proc = tool("learning_curve.py", flag, "abc", "--data", str(tmp_path / "missing"), env=child_env)
    refused(proc, "learning_curve.py", flag)


# -- attach_validation.py, reexport.py --------------------------------------------------------

@pytest.mark.parametrize("name", ["attach_validation.py", "reexport.py"])
def test_a_builtin_name_is_not_rewritten_as_a_new_file_here(name, tmp_path, child_env):
    proc = tool(name, "bearing-cwru", env=child_env, cwd=tmp_path)
    refused(proc, name, "give the path of a .pt file", "drsn_stream/artifacts/bearing-cwru.pt")
    assert list(tmp_path.iterdir()) == []


def test_attach_validation_refuses_bad_per_kind_and_a_speech_model(tmp_path, child_env):
    art = tmp_path / "b.pt"
    art.write_bytes((REPO / "drsn_stream/artifacts/bearing-cwru.pt").read_bytes())
    for bad in ("0", "-3", "100000000"):
        refused(tool("attach_validation.py", str(art), "--per-kind", bad, env=child_env),
                "attach_validation.py", "--per-kind")
    speech = tmp_path / "d.pt"
    speech.write_bytes((REPO / "drsn_stream/artifacts/digits-fsdd.pt").read_bytes())
    refused(tool("attach_validation.py", str(speech), env=child_env), "attach_validation.py", "not a CWRU bearing model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.pt", "d.pt"]


@pytest.mark.slow
def test_attach_validation_metadata_counts_the_windows_it_stores(data_dir, tmp_path, child_env):
    art = tmp_path / "b.pt"
    art.write_bytes((REPO / "drsn_stream/artifacts/bearing-cwru.pt").read_bytes())
    proc = tool("attach_validation.py", str(art), "--per-kind", "5", "--data", str(data_dir / "cwru"), env=child_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from drsn_stream.models import load_artifact
    from drsn_stream.models.artifact import load_validation

    _, meta = load_artifact(art)
    assert meta.training["validation_windows"]["count"] == len(load_validation(art)) == 15


def test_reexport_checks_its_flags_and_out_before_the_work(tmp_path, child_env):
    art = str(REPO / "drsn_stream/artifacts/bearing-cwru.pt")
    refused(tool("reexport.py", art, "--max-validation", "-1", "--out", str(tmp_path / "r.pt"), env=child_env),
            "reexport.py", "--max-validation")
    (tmp_path / "dir.pt").mkdir()
    refused(tool("reexport.py", art, "--out", str(tmp_path / "dir.pt"), env=child_env), "reexport.py", "folder")
    assert [p.name for p in tmp_path.iterdir()] == ["dir.pt"]


# -- eval_envelope.py -------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--set", "foo=1"], ["--set", "foo=1", "band_hz"]),
    (["--set", "harmonics=x"], ["harmonics", "whole number"]),
    (["--set", "threshold_db"], ["KEY=VALUE"]),
    (["--null", "-1"], ["--null"]),
    (["--null", "100000000000000000000"], ["--null"]),
    (["--speed-error", "nan"], ["--speed-error"]),
    (["--speed-error", "5"], ["--speed-error"]),
    (["--native", "--learn"], ["--native", "--learn"]),
])
def test_eval_envelope_refuses_bad_flags(args, words, data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [NORMAL])
    refused(tool("eval_envelope.py", "--data", str(folder), *args, env=child_env), "eval_envelope.py", *words)


def test_eval_envelope_learn_without_the_healthy_recording_is_one_line(data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [IR007])
    refused(tool("eval_envelope.py", "--data", str(folder), "--learn", env=child_env), "eval_envelope.py",
            "--learn needs the healthy recording")


def test_eval_envelope_recording_shorter_than_a_block_is_one_line(data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [], **{NORMAL: lambda x: x[:500]})
    refused(tool("eval_envelope.py", "--data", str(folder), env=child_env), "eval_envelope.py", NORMAL, "shorter")


def test_eval_envelope_skips_and_counts_nan_blocks(data_dir, tmp_path, child_env):
    # a NaN block was analysed as "no fault, 0 dB" (and scored right for the healthy recording)
    folder = cwru_folder(data_dir, tmp_path / "cw", [], **{NORMAL: nan_at(0, 1000)})
    proc = tool("eval_envelope.py", "--data", str(folder), env=child_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"skipped 1 blocks with NaN or infinite samples: {NORMAL} 1" in proc.stdout
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith(NORMAL))
    assert row.split()[3] == "4"  # of the 5 one-second blocks


def test_eval_envelope_reads_the_fan_end_accelerometer_when_asked(data_dir, tmp_path, child_env):
    # --channel FE analyses the fan-end channel: other samples, so other evidence than the drive
    # end's, and the inner-race fault still named from it (the drive-end channel was the only one)
    name = "12k_Drive_End_IR007_0_105.mat"
    folder = cwru_folder(data_dir, tmp_path / "cw", [name])
    rows = {}
    for channel in ("DE", "FE"):
        proc = tool("eval_envelope.py", "--data", str(folder), *(["--channel", channel] if channel == "FE" else []),
                    env=child_env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"channel {channel};" in proc.stdout
        rows[channel] = next(ln for ln in proc.stdout.splitlines() if ln.startswith(name)).split()
    assert rows["DE"][5:8] != rows["FE"][5:8]  # the median evidence of each family
    assert rows["FE"][4] == "100%" and rows["FE"][8:10] == ["inner_race", "10"]


def test_envelope_does_not_call_a_nan_block_healthy():
    from drsn_stream.dsp.envelope import analyse_block, bearing_geometry
    from drsn_stream.errors import DataError

    x = np.random.default_rng(0).standard_normal(12000)
    x[100] = np.nan
    with pytest.raises(DataError, match="NaN"):
        analyse_block(x, 12000.0, 29.95, bearing_geometry("cwru-de"))


# -- plot_envelope.py, plot_anomaly.py --------------------------------------------------------

IR014 = "12k_Drive_End_IR014_0_169.mat"


@pytest.fixture
def no_matplotlib(tmp_path, child_env) -> dict[str, str]:
    """``child_env`` where ``import matplotlib`` fails, as where it is not installed."""
    fake = tmp_path / "no-mpl" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    return {**child_env, "PYTHONPATH": f"{fake.parent}:{child_env['PYTHONPATH']}"}


@pytest.mark.parametrize("name", ["plot_envelope.py", "plot_anomaly.py"])
def test_plots_check_out_before_the_work(name, tmp_path, child_env):
    refused(tool(name, "--out", str(tmp_path / "fig.txt"), "--data", str(tmp_path), env=child_env), name, ".png")
    (tmp_path / "fig.png").mkdir()
    refused(tool(name, "--out", str(tmp_path / "fig.png"), "--data", str(tmp_path), env=child_env), name, "fig.png")


def test_plot_envelope_without_matplotlib_says_how_to_install_it(data_dir, tmp_path, no_matplotlib):
    folder = cwru_folder(data_dir, tmp_path / "cw", [IR014], **{NORMAL: nan_at(0, 1000)})
    proc = tool("plot_envelope.py", "--data", str(folder), "--out", str(tmp_path / "e.png"), env=no_matplotlib)
    refused(proc, "plot_envelope.py", "matplotlib", "pip install -e '.[docs]'")
    assert f"{NORMAL}: left out 1 of 5 blocks with NaN" in proc.stderr  # not drawn silently
    assert not (tmp_path / "e.png").exists()


def test_plot_envelope_without_rpm_or_too_short_is_one_line(data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [IR014], **{NORMAL: lambda x: x[:500]})
    refused(tool("plot_envelope.py", "--data", str(folder), "--out", str(tmp_path / "e.png"), env=child_env),
            "plot_envelope.py", NORMAL, "shorter")
    mat = {k: v for k, v in scipy.io.loadmat(data_dir / "cwru" / IR014).items() if not k.endswith("RPM")}
    (folder / IR014).unlink()
    scipy.io.savemat(folder / IR014, {k: v for k, v in mat.items() if not k.startswith("__")})
    refused(tool("plot_envelope.py", "--data", str(folder), "--out", str(tmp_path / "e.png"), env=child_env),
            "plot_envelope.py", IR014, "RPM")


@pytest.mark.slow
def test_plot_anomaly_recording_too_short_is_one_line(data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [], **{NORMAL: lambda x: x[:500]})
    refused(tool("plot_anomaly.py", "--data", str(folder), "--out", str(tmp_path / "a.png"), env=child_env),
            "plot_anomaly.py", NORMAL, "shorter than one window")


# -- make_excerpts.py -------------------------------------------------------------------------

@pytest.mark.parametrize("change, words", [(nan_at(5000, 5100), "NaN"), (lambda x: x[:4000], "shorter")])
def test_make_excerpts_refuses_a_broken_recording(change, words, data_dir, tmp_path, child_env):
    cwru_folder(data_dir, tmp_path / "d" / "cwru", [n for n in TRAINED_ON if n != IR007], **{IR007: change})
    out = tmp_path / "x.npz"
    proc = tool("make_excerpts.py", "--data", str(tmp_path / "d"), "--out", str(out), env=child_env)
    refused(proc, "make_excerpts.py", IR007, words)
    assert not out.exists()


# -- the smaller tools ------------------------------------------------------------------------

@pytest.mark.parametrize("name, args, words", [
    ("bench_speech.py", ["--model", "bearing-cwru", "--seconds", "1"], ["not a speech model"]),
    ("bench_speech.py", ["--seconds", "inf"], ["--seconds"]),
    ("reproduce_paper.py", ["--nets", "bogus"], ["--nets", "bogus", "drsn_cw_paper"]),
    ("reproduce_paper.py", ["--seeds", "-1"], ["--seeds"]),
    ("bench_engine_ab.py", ["--batch-sizes", "0"], ["--batch-sizes"]),
    ("bench_dashboard.py", ["--compare", "missing.py"], ["--compare", "missing.py"]),
    ("bench_ingest.py", ["--warm-up", "-1"], ["--warm-up", "0 or more"]),
    ("bench_ingest.py", ["--streams", "10", "--channels", "16"], ["--streams 10", "--channels 16"]),
    ("learn_memory.py", ["--minutes", "0"], ["--minutes"]),
])
def test_small_tools_refuse_bad_flags_in_one_line(name, args, words, tmp_path, child_env):
    refused(tool(name, *args, env=child_env, cwd=tmp_path), name, *words)
    assert list(tmp_path.iterdir()) == []


def test_bench_engine_ab_says_a_corrupt_model_is_corrupt(tmp_path, child_env):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not a model")
    line = refused(tool("bench_engine_ab.py", "--model", str(bad), env=child_env), "bench_engine_ab.py", "bad.pt")
    assert "validation windows" not in line


def test_gpu_probe_on_a_machine_without_cuda_is_one_line(child_env):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    refused(tool("gpu_probe.py", env=child_env), "gpu_probe.py", "needs a CUDA GPU")


def test_loso_ensembles_missing_keys_or_files_is_one_line(tmp_path, child_env):
    np.savez(tmp_path / "loso-george-probs.npz", probs=np.zeros((2, 3, 13)), truth=np.zeros(3, int))
    refused(tool("loso_ensembles.py", str(tmp_path), env=child_env), "loso_ensembles.py", "seeds")
    np.savez(tmp_path / "loso-george-probs.npz", probs=np.zeros((2, 3, 13)), truth=np.zeros(3, int), seeds=[0, 1])
    refused(tool("loso_ensembles.py", str(tmp_path), env=child_env), "loso_ensembles.py", "loso-george.json")
    # probabilities that are NaN, or not one row per seed and label, were scored as an accuracy
    (tmp_path / "loso-george.json").write_text('{"epochs": 3}')
    probs = np.full((2, 3, 13), 1 / 13)
    probs[1, 0, :] = np.nan
    np.savez(tmp_path / "loso-george-probs.npz", probs=probs, truth=np.zeros(3, int), seeds=[0, 1])
    refused(tool("loso_ensembles.py", str(tmp_path), env=child_env), "loso_ensembles.py", "NaN")
    np.savez(tmp_path / "loso-george-probs.npz", probs=probs[:, :2], truth=np.zeros(3, int), seeds=[0, 1])
    refused(tool("loso_ensembles.py", str(tmp_path), env=child_env), "loso_ensembles.py", "(2, 2, 13)")


# -- eval_other_rig.py ------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--scales", "x"], ["--scales", "numbers"]),
    (["--scales", "3"], ["--scales", "between"]),
    (["--scales", "nan"], ["--scales"]),
    (["--scales", "1.4"], ["x1.4", "too short", "lower speeds"]),  # a faster machine's recording is shorter
    (["--learn-speeds", "0.8,x"], ["--learn-speeds", "numbers"]),
    (["--learn-speeds", "0.8,1.5"], ["x1.5", "too short"]),
    (["--stops", "--learn-speeds", "0.8"], ["--stops", "--learn-speeds", "give one"]),
    (["--stops", "--scales", "1.4"], ["x1.4", "too short"]),
    (["--stops", "--config", "no-such-alarms.toml"], ["no-such-alarms.toml", "not found"]),
])
def test_eval_other_rig_refuses_bad_speeds_before_the_work(args, words, data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [NORMAL])
    proc = tool("eval_other_rig.py", "--data", str(folder), *args, env=child_env)
    refused(proc, "eval_other_rig.py", *words)
    assert "| speed" not in proc.stdout


def test_eval_other_rig_without_the_healthy_recording_is_one_line(data_dir, tmp_path, child_env):
    folder = cwru_folder(data_dir, tmp_path / "cw", [IR007])
    refused(tool("eval_other_rig.py", "--data", str(folder), env=child_env), "eval_other_rig.py", NORMAL, "--data")


@pytest.mark.slow
def test_eval_other_rig_measures_a_slower_rig_through_the_monitor(data_dir, tmp_path, child_env):
    """At 0.8 times the rig's speed the model names a fault on every healthy window; the tool's row
    gives them, none shown or alarmed on against the learned baseline, and the fault recording
    alarmed; --json holds the same figures."""
    folder = cwru_folder(data_dir, tmp_path / "cw", [NORMAL, IR007])
    proc = tool("eval_other_rig.py", "--data", str(folder), "--scales", "0.8", "--json", str(tmp_path / "r.json"),
                env=child_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = [ln for ln in proc.stdout.splitlines() if ln.startswith("| x0.8 ")]
    assert len(row) == 1, proc.stdout
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    windows, named, shown, alarms, alarmed = int(cells[1]), int(cells[2]), int(cells[3]), int(cells[4]), cells[5]
    assert windows >= 30 and named == windows and shown == 0 and alarms == 0 and alarmed == "1 of 1", row
    import json

    r = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert r["healthy"]["windows"] == windows and r["faults"]["alarmed"] == 1


@pytest.mark.slow
def test_eval_other_rig_stops_and_starts_the_healthy_machine_without_an_alarm(data_dir, tmp_path, child_env):
    """--stops: the healthy machine brought to rest (abruptly, coast-downs of 1-5 s) and run up
    again: a row per stop, none alarmed on or taken for the sensor's fault, and the machine judged
    again after its start-up; --json holds the same figures."""
    folder = cwru_folder(data_dir, tmp_path / "cw", [NORMAL])
    proc = tool("eval_other_rig.py", "--data", str(folder), "--stops", "--json", str(tmp_path / "s.json"),
                env=child_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in proc.stdout.splitlines() if ln.startswith("| x1 ")]
    assert [r[1] for r in rows] == ["abrupt", "coast 1 s", "coast 3 s", "coast 5 s"], proc.stdout
    for r in rows:
        judged, of = (int(v) for v in r[4].split(" of "))
        assert r[2] == "0" and r[3] == "0" and judged >= of - 2 and of > 100 and r[5] == "0", r
    import json

    got = json.loads((tmp_path / "s.json").read_text())["stops"]
    assert [g["alarms"] for g in got] == [0, 0, 0, 0] and got[0]["after_start_up"] == int(rows[0][4].split(" of ")[1])
