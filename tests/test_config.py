"""Run config files: every table is read by someone, or refused with the valid names."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from drsn_stream.app.cli import SECTIONS, add_arguments, config_from_args
from drsn_stream.config import loads_toml
from drsn_stream.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _config(tmp_path: Path, text: str, *argv: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return config_from_args(_args("--config", str(path), *argv))


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_run_config_is_accepted(path: Path) -> None:
    if not set(loads_toml(path.read_text())) <= set(SECTIONS):
        pytest.skip("not a run config (a training recipe)")
    config_from_args(_args("--config", str(path), "--source", "sim"))


def test_a_mistyped_section_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, '[run]\nsources = ["sim"]\n[decisions]\nenter = 0.8\n')
    msg = str(err.value)
    assert "[decisions]" in msg and all(f"[{s}]" in msg for s in SECTIONS)


@pytest.mark.parametrize("table, bad", [("decision", "entre = 0.8"), ("health", "flat_rms = 1"),
                                        ("detector", "enterr = 0.8"), ("capture", "pre = 3"),
                                        ("envelope", "bandd = 1")])
def test_a_mistyped_key_is_refused_naming_its_table(tmp_path: Path, table: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[{table}\]: unknown key"):
        _config(tmp_path, f'[run]\nsources = ["sim"]\n[{table}]\n{bad}\n')


def test_a_bad_detector_value_is_refused_before_the_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[detector\]: .*leave <= enter"):
        _config(tmp_path, '[run]\nsources = ["sim"]\n[detector]\nenter = 0.3\nleave = 0.6\n')


def test_the_capture_table_and_the_flag_fill_the_same_fields(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f'[run]\nsources = ["sim"]\n[capture]\ndir = "{tmp_path}/c"\npre_s = 2.0\npost_s = 3.0\n')
    assert (cfg.capture_dir, cfg.capture_pre_s, cfg.capture_post_s) == (f"{tmp_path}/c", 2.0, 3.0)
    cfg = _config(tmp_path, '[run]\nsources = ["sim"]\n[capture]\npre_s = 2.0\n', "--capture", str(tmp_path / "d"))
    assert (cfg.capture_dir, cfg.capture_pre_s) == (str(tmp_path / "d"), 2.0)  # the flag wins, the rest stays
