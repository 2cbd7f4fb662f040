"""Run config files: every table is read by someone, or refused with the valid names; TOML and
flags fill the same typed fields."""

from __future__ import annotations

import argparse
import pickle
import re
from dataclasses import fields
from pathlib import Path

import pytest

from drsn_stream.app.cli import FLAGS, add_arguments, config_from_args
from drsn_stream.app.runconfig import RUN_KEYS, SECTIONS, TABLES, RunConfig, from_doc, to_doc
from drsn_stream.config import SHIPPED, dump_toml, loads_toml
from drsn_stream.errors import ConfigError
from drsn_stream.models.artifact import read_meta
from drsn_stream.monitor.decision import DecisionConfig, DecisionTable

REPO = Path(__file__).resolve().parents[1]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _config(tmp_path: Path, text: str, *argv: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return config_from_args(_args("--config", str(path), *argv))


@pytest.mark.parametrize("path", sorted([*(REPO / "configs").glob("*.toml"), *SHIPPED.glob("*.toml")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_run_config_is_accepted(path: Path) -> None:
    if not set(loads_toml(path.read_text())) <= set(TABLES):
        pytest.skip("not a run config (a training recipe)")
    config_from_args(_args("--config", str(path), "--source", "sim"))


@pytest.mark.parametrize("content, says", [("[run]\nthreads = " + "9" * 5000 + "\n", "4300 digits"),
                                           (b"\xff\xfe[run]\n", "can't decode byte 0xff")])
def test_a_config_file_tomllib_cannot_read_is_one_clear_error(tmp_path: Path, content, says) -> None:
    # an integer of over 4,300 digits and bytes that are not UTF-8: tomllib raises a bare
    # ValueError for these, not its TOMLDecodeError, and the command printed a traceback
    path = tmp_path / "run.toml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(ConfigError, match=f"run.toml: not valid TOML .*{says}"):
        config_from_args(_args("--config", str(path)))


def test_durations_in_a_config_file_read_as_the_flags_read_them(tmp_path: Path) -> None:
    # duration = "10m" was "duration must be a number": the flags took seconds only, and now forms
    cfg = _config(tmp_path, '[run]\nsources = ["sim"]\nduration = "1h30m"\nlearn_s = "10m"\n')
    assert (cfg.duration, cfg.learn_s) == (5400.0, 600.0)
    assert _config(tmp_path, '[run]\nsources = ["sim"]\nduration = 90\n').duration == 90.0  # seconds, as before
    assert _config(tmp_path, '[run]\nsources = ["sim"]\nduration = "1h"\n', "--duration", "2m").duration == 120.0
    with pytest.raises(ConfigError, match=re.escape("[run] duration: cannot read the duration 'two'; write e.g. 90")):
        _config(tmp_path, '[run]\nsources = ["sim"]\nduration = "two"\n')


def test_every_reads_as_a_duration_and_makes_the_run_headless(tmp_path: Path) -> None:
    cfg = _config(tmp_path, '[run]\nsources = ["sim"]\n[sinks]\nevery = "1m"\n')
    assert (cfg.sinks.every, cfg.sinks.headless) == (60.0, True)  # the summed-up lines are lines
    assert config_from_args(_args("--source", "sim", "--every", "10s")).sinks.every == 10.0
    assert config_from_args(_args("--source", "sim")).sinks.every is None  # a line per decision
    with pytest.raises(ConfigError, match=re.escape("[sinks] every: cannot read the duration 'often'")):
        _config(tmp_path, '[run]\nsources = ["sim"]\n[sinks]\nevery = "often"\n')
    with pytest.raises(ConfigError, match="every must be from 0.1 s to 1 day"):
        _config(tmp_path, '[run]\nsources = ["sim"]\n[sinks]\nevery = 0.01\n')


def test_a_mistyped_section_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, '[run]\nsources = ["sim"]\n[decisions]\nenter = 0.8\n')
    msg = str(err.value)
    assert "[decisions] (did you mean [decision]?)" in msg  # the nearest first, then all of them
    assert all(f"[{s}]" in msg for s in TABLES) and "\n" not in msg


@pytest.mark.parametrize("table, bad, near", [("run", "max_batchh = 8", "max_batch"),
                                              ("decision", "entre = 0.8", None), ("health", "flat_rms = 1", "flat_std"),
                                              ("detector", "enterr = 0.8", "enter"), ("capture", "pre = 3", "pre_s"),
                                              ("machine", "beering = \"6205\"", "bearing"),
                                              ("envelope", "bandd = 1", None), ("sinks", "json = \"-\"", "jsonl")])
def test_a_mistyped_key_is_refused_naming_its_table_and_the_valid_keys(tmp_path: Path, table: str, bad: str,
                                                                       near: str | None) -> None:
    text = f'[{table}]\n{bad}\n' if table == "run" else f'[run]\nsources = ["sim"]\n[{table}]\n{bad}\n'
    guess = f" (did you mean {near}?)" if near else ""  # the nearest key first, where one is near
    says = rf"\[{table}\]: unknown key\(s\) {bad.split()[0]}{re.escape(guess)}; valid keys: "
    with pytest.raises(ConfigError, match=says) as err:
        _config(tmp_path, text)
    assert "\n" not in str(err.value)


def test_every_section_is_covered_by_the_unknown_key_test() -> None:
    params = test_a_mistyped_key_is_refused_naming_its_table_and_the_valid_keys.pytestmark[0].args[1]
    assert {table for table, *_ in params} == set(TABLES)


@pytest.mark.parametrize("table, line, says", [
    ("run", 'max_batch = "big"', "max_batch must be an integer, not 'big' (str)"),
    ("run", "sources = 5", "sources must be a list of strings, not 5 (int)"),
    ("decision", 'latching = "yes"', "latching must be true or false, not 'yes' (str)"),
    ("health", 'flat_std = "tiny"', "flat_std must be a number, not 'tiny' (str)"),
    ("detector", "confirm = true", "confirm must be an integer, not True (bool)"),
    ("capture", "levels = [1, 2]", "levels[0] must be a string, not 1 (int)"),
    ("machine", 'rpm = "fast"', "rpm must be a number, not 'fast' (str)"),
    ("envelope", "harmonics = 2.5", "harmonics must be an integer, not 2.5 (float)"),
    ("sinks", "headless = 1", "headless must be true or false, not 1 (int)"),
])
def test_a_value_of_the_wrong_type_is_one_line_naming_the_key_and_what_it_takes(
        tmp_path: Path, table: str, line: str, says: str) -> None:
    text = f'[{table}]\n{line}\n' if table == "run" else f'[run]\nsources = ["sim"]\n[{table}]\n{line}\n'
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, text)
    msg = str(err.value)
    assert f"[{table}]: {says}" in msg and msg.startswith(str(tmp_path)) and "\n" not in msg


@pytest.mark.parametrize("table, line, says", [
    ("run", "max_batch = 0", "max_batch must be from 1 to 16,384"),
    ("run", 'fp16 = "yes"', "fp16 must be one of auto, on, off"),
    ("decision", "enter_confidence = 0.2\nleave_confidence = 0.5", "leave_confidence <= enter_confidence"),
    ("machine", 'bearing = "6205"\nbpfo = 3.5', "give bearing = '6205', the four orders or the dimensions, not two"),
    ("machine", '[[machine.streams]]\nrpm = 1480', "entries need match"),
    ("sinks", 'metrics_address = "host:99999"', "port 0-65535"),
    # values that passed and then stopped the monitor as it built its tables or on its first
    # batch (an array of 10^18 windows per stream, an int64 overflow in the compiled kernels),
    # or silently turned a test off (NaN compares false)
    ("decision", "window_count = 1000000000000000000", "window_count must be an integer from 1 to 256"),
    ("decision", "set_windows = 9223372036854775807", "set_windows must be an integer from 1 to 1,000,000"),
    ("decision", "danger_after_s = nan", "danger_after_s must be >= 0"),
    ("health", "clip_min_samples = 9223372036854775807", "clip_min_samples must be a whole number from 1"),
    ("health", "flat_std = nan", "flat_std must be >= 0"),
    ("health", "recovery_s = nan", "recovery_s must be >= 0"),
    ("health", "full_scale = 1e-300", "within float32's range"),
    # 2^63 harmonics: the envelope stage built lines until it ran out of memory, no word said;
    # a NaN capture span stopped the run blaming its source
    ("envelope", "harmonics = 9223372036854775807", "harmonics must be an integer from 1 to 20"),
    ("envelope", "line_bins = 1000000", "line_bins must be an integer from 0 to 100"),
    ("envelope", "tolerance = 1e30", "tolerance must be >= 0 and < 1"),
    ("envelope", "threshold_db = nan", "threshold_db must be a number of dB"),
    ("capture", "pre_s = nan", "pre_s, post_s and margin_s must be from 0 to 86400 seconds"),
    ("capture", "post_s = inf", "pre_s, post_s and margin_s must be from 0 to 86400 seconds"),
    ("capture", "max_ring_bytes = 0", "max_ring_bytes must be a whole number of bytes >= 1"),
    ("detector", "refractory_s = nan", "refractory_s >= 0"),
    ("run", "max_batch = 9223372036854775807", "max_batch must be from 1 to 16,384"),  # a traceback before
    ("run", "threads = 9223372036854775807", "threads must be from 1 to 1,024"),
    ("run", "hop = 9223372036854775807", "hop must be from 1 to 16,777,216"),  # before: "source failed"
])
def test_a_value_out_of_range_is_one_line_naming_the_table(tmp_path: Path, table: str, line: str, says: str) -> None:
    text = f'[run]\nsources = ["sim"]\n[{table}]\n{line}\n'.replace("[run]\nsources = [\"sim\"]\n[run]", "[run]")
    with pytest.raises(ConfigError, match=r"\[" + ("machine" if table == "machine" else table)) as err:
        _config(tmp_path, text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_bad_detector_value_is_refused_before_the_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[detector\]: .*leave <= enter"):
        _config(tmp_path, '[run]\nsources = ["sim"]\n[detector]\nenter = 0.3\nleave = 0.6\n')


def test_the_capture_table_and_the_flag_fill_the_same_fields(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f'[run]\nsources = ["sim"]\n[capture]\ndir = "{tmp_path}/c"\npre_s = 2.0\npost_s = 3.0\n')
    assert (cfg.capture.dir, cfg.capture.pre_s, cfg.capture.post_s) == (f"{tmp_path}/c", 2.0, 3.0)
    cfg = _config(tmp_path, '[run]\nsources = ["sim"]\n[capture]\npre_s = 2.0\n', "--capture", str(tmp_path / "d"))
    assert (cfg.capture.dir, cfg.capture.pre_s) == (str(tmp_path / "d"), 2.0)  # the flag wins, the rest stays


TOML_RUN = """
[run]
sources = ["sim:bearing?machines=2", "sim"]
model = "bearing-cwru"
device = "cpu"
max_batch = 32
max_wait_ms = 15
eager_batch = 8
stale_ms = 900
hop = 256
fast = true
duration = 3
threads = 1
cpu_layout = "off"
engine_process = false
pin_cpus = false
idle_flush = false
learn_s = 90
[decision]
latching = true
[capture]
dir = "caps"
[machine]
bearing = "6205"
rpm = 1797
[sinks]
jsonl = "-"
publish = "tcp://127.0.0.1:5599"
headless = true
metrics_address = "127.0.0.1:9464"
"""

FLAGS_RUN = ("--source", "sim:bearing?machines=2", "--source", "sim", "--model", "bearing-cwru", "--device", "cpu",
             "--max-batch", "32", "--max-wait-ms", "15", "--eager-batch", "8", "--stale-ms", "900", "--hop", "256",
             "--fast", "--duration", "3", "--threads", "1", "--cpu-layout", "off", "--engine-process", "off",
             "--no-pin-cpus", "--no-idle-flush", "--learn", "90s", "--latch", "--capture", "caps", "--bearing", "6205",
             "--rpm", "1797", "--jsonl", "-", "--publish", "tcp://127.0.0.1:5599", "--headless",
             "--metrics-port", "9464")


def test_a_toml_file_and_the_equivalent_flags_give_equal_configs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DRSN_STREAM_DURATION", raising=False)
    from_file = _config(tmp_path, TOML_RUN)
    from_flags = config_from_args(_args(*FLAGS_RUN))
    assert from_file == from_flags
    assert from_file != RunConfig(sources=from_file.sources)  # the fields were set, not left at their defaults
    assert from_file.sinks.metrics_address == "127.0.0.1:9464" and from_file.decision.settings.latching
    assert from_file.machine.table() == {"bearing": "6205", "rpm": 1797.0}


def test_every_config_flag_sets_a_field_of_the_run_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ui_only = {"help", "config", "print_config", "once", "refresh"}  # how to run, not what the run is
    dests = {a.dest for a in parser._actions} - ui_only
    assert dests == set(FLAGS)
    for flag in FLAGS.values():
        assert flag.key in _keys(flag.section), flag


def _keys(table: str) -> set[str]:
    if table == "run":
        return set(RUN_KEYS)
    cls = SECTIONS[table]
    return {f.name for f in fields(DecisionConfig if cls is DecisionTable else cls)}


def test_flags_override_the_file_and_leave_its_other_keys(tmp_path: Path) -> None:
    cfg = _config(tmp_path, '[run]\nsources = ["sim"]\nmax_batch = 8\n[machine]\nbpfo = 3.5\nbpfi = 5.4\nbsf = 2.3\n'
                            'ftf = 0.4\nshaft_hz = 30.0\n[sinks]\njsonl = "a.jsonl"\n',
                  "--max-batch", "16", "--bearing", "6205", "--rpm", "1500", "--headless")
    assert cfg.max_batch == 16
    assert cfg.machine.table() == {"bearing": "6205", "rpm": 1500.0}  # the flags replace the orders and shaft_hz
    assert (cfg.sinks.jsonl, cfg.sinks.headless) == ("a.jsonl", True)


def test_the_printed_config_reads_back_to_the_same_config(tmp_path: Path) -> None:
    cfg = config_from_args(_args("--config", "machine-cwru", "--source", "sim", "--latch", "--capture", "c",
                                 "--metrics-port", "9464", "--rpm", "1797"))
    doc, notes = to_doc(cfg)
    assert from_doc(loads_toml(dump_toml(doc, notes))) == cfg
    streams = _config(tmp_path, '[machine]\nbearing = "6205"\n[[machine.streams]]\nmatch = "pump-*"\nrpm = 1480\n'
                                '[[machine.streams]]\nmatch = "fan-*"\nbearing = ""\n', "--source", "sim")
    assert len(streams.machine.streams) == 2
    assert from_doc(loads_toml(dump_toml(*to_doc(streams)))) == streams
    labels = read_meta("bearing-cwru").labels
    again = from_doc(loads_toml(dump_toml(*to_doc(cfg, labels))))  # [decision] resolved for the model
    assert again.decision.resolve(labels) == cfg.decision.resolve(labels)
    assert again.decision.resolve(labels).alert_labels == tuple(lb for lb in labels if lb != "normal")


def test_the_decision_table_keeps_the_label_defaults_it_was_not_given() -> None:
    labels = read_meta("bearing-cwru").labels
    latched = DecisionTable.from_table({"latching": True})
    assert latched.resolve(labels).danger_after_s == 30.0 and latched.resolve(labels).latching
    assert latched.resolve(["zero", "one", "_noise"]).alert_labels == ()
    assert DecisionTable.from_table({"danger_after_s": 5.0}).resolve(labels).danger_after_s == 5.0


def test_a_python_dict_for_a_section_is_read_like_its_table() -> None:
    cfg = RunConfig(decision={"latching": True}, health={"timeout_s": 3}, capture={"dir": "c", "pre_s": 1})
    assert cfg == RunConfig(decision=DecisionTable.from_table({"latching": True}),
                            health=cfg.health, capture=cfg.capture)
    assert cfg.health.timeout_s == 3.0 and cfg.capture.dir == "c"
    with pytest.raises(ConfigError, match=r"\[health\]: unknown key\(s\) timeout \(did you mean timeout_s\?\); valid keys: "):
        RunConfig(health={"timeout": 3})


def test_a_run_config_survives_pickling_for_the_cluster_hosts() -> None:
    cfg = config_from_args(_args("--config", "demo", "--bearing", "6205", "--capture", "c", "--jsonl", "x.jsonl"))
    assert pickle.loads(pickle.dumps(cfg)) == cfg


@pytest.mark.parametrize("argv, says", [
    # a NaN duration ran for ever, 2^63 batch sizes or threads raised from inside numpy / torch
    (["publish", "--duration", "nan", "--quiet"], "argument --duration: a duration must be a finite number > 0, not 'nan'"),
    (["--duration", "inf"], "argument --duration: a duration must be a finite number > 0, not 'inf'"),
    (["baseline", "learn", "--source", "sim", "--out", "p.json", "--duration", "10x"],
     "argument --duration: cannot read the duration '10x'; write e.g. 90, 30s, 10m, 1h30m or 2d"),
    (["publish", "--wait-subscriber", "-1"], "argument --wait-subscriber: must be >= 0"),
    (["bench", "--seconds", "nan"], "argument --seconds: 'nan' is not a finite number"),
    (["bench", "--batch-sizes", "64,9223372036854775807"], "give whole numbers from 1 to 16,384"),
    (["bench", "--threads", "9223372036854775807"], "argument --threads: must be at most 1,024"),
    (["--source", "sim", "--rpm", "inf"], "argument --rpm: 'inf' is not a finite number"),
    (["--source", "sim", "--refresh", "0"], "argument --refresh: must be > 0"),
    (["train", "--windows-per-class", "9223372036854775807"], "argument --windows-per-class: must be at most 1,000,000"),
    (["train", "--lr", "nan"], "argument --lr: 'nan' is not a finite number"),
    (["train", "--seed", "-1"], "argument --seed: must be >= 0"),  # numpy's generators refuse it
    (["eval", "--model", "bearing-cwru", "--seed", "4294967296"], "argument --seed: must be at most 4,294,967,295"),
])
def test_a_number_flag_out_of_its_range_is_one_line_naming_the_flag(argv: list[str], says: str, capsys) -> None:
    # the parser alone, as `main` builds it: without the check some of these would run for ever
    from drsn_stream.cli import SUBCOMMANDS, build_parser

    command = argv[0] if argv[0] in SUBCOMMANDS else "run"
    argv = argv if argv[0] in SUBCOMMANDS else ["run", *argv]
    with pytest.raises(SystemExit) as info:
        build_parser(command).parse_args(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and says in err and "Traceback" not in err
