"""A disk that fills while drsn-stream writes a model, a checkpoint, its log or a capture, and a
limit that refuses it shared memory.

The disk is filled for real: each command runs in a child whose file size limit
(``RLIMIT_FSIZE``) is below the size of what it writes, so the kernel refuses the write as it
refuses one on a full disk (EFBIG instead of ENOSPC; Python ignores SIGXFSZ, so the write
returns the error). ``torch.jit.save`` given a file path aborted the whole process there (an
uncaught C++ exception), after a training run of hours; ``torch.save`` raised a RuntimeError
about zip offsets and left half a file.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from drsn_stream.config import write_atomic
from drsn_stream.errors import WriteError
from drsn_stream.models import ArtifactMeta, build_from_config, load_artifact, model_config
from drsn_stream.train.loop import save_torch

LIMIT = 100_000  # bytes: below each file written here (a model is ~475 kB), above what start-up writes


def run_on_a_full_disk(*args: str, cwd: Path, limit: int = LIMIT) -> subprocess.CompletedProcess[str]:
    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, preexec_fn=small_disk,
                          capture_output=True, text=True, timeout=300)


def said_in_one_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # -6 was SIGABRT
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    for w in words:
        assert w in done.stderr, done.stderr


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_export_of_a_checkpoint_onto_a_full_disk_says_so_and_leaves_no_half_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = model_config("drsn_cw_paper", num_classes=4)
    model = build_from_config(cfg)
    meta = ArtifactMeta(name="full-disk", model="drsn_cw_paper", labels=["normal", "ball", "inner", "outer"],
                        sample_rate=12000, window=2048, hop=512, training={"data": "unit test"})
    save_torch({"model_state": model.state_dict(), "model_config": cfg.to_dict(), "meta": meta.to_dict()},
               tmp_path / "best.pt")
    out = tmp_path / "out"
    out.mkdir()
    done = run_on_a_full_disk("-m", "drsn_stream", "export", "--checkpoint", "best.pt", "--out", "out/model.pt",
                              cwd=tmp_path)
    said_in_one_line(done, "out/model.pt", "File too large", "free space")
    assert leftovers(out) == []
    # the same command with room writes a model that loads
    done = subprocess.run([sys.executable, "-m", "drsn_stream", "export", "--checkpoint", "best.pt",
                           "--out", "out/model.pt"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert load_artifact(out / "model.pt")[1].name == "full-disk"


def test_triton_export_onto_a_full_disk_says_so_and_leaves_no_half_file(tmp_path: Path) -> None:
    done = run_on_a_full_disk("-m", "drsn_stream", "export", "--triton", "repo", "--model", "bearing-cwru",
                              cwd=tmp_path)
    said_in_one_line(done, "cannot write the Triton repository", "File too large", "--triton")
    assert not any(name.endswith(".tmp") for name in leftovers(tmp_path)), leftovers(tmp_path)


def test_a_checkpoint_that_does_not_fit_is_a_write_error_and_the_old_one_stays(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    save_torch({"epoch": 1}, path)
    code = ("import sys, torch; from drsn_stream.train.loop import save_torch\n"
            "try:\n    save_torch({'w': torch.zeros(100_000)}, __import__('pathlib').Path(sys.argv[1]))\n"
            "except OSError as e:\n    print(type(e).__name__, e.errno, e)\n")
    done = run_on_a_full_disk("-c", code, str(path), cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("WriteError 27 cannot write"), (done.stdout, done.stderr)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert leftovers(tmp_path) == ["best.pt"]


def test_a_write_error_is_an_oserror_with_the_cause_and_a_message_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "model.pt").mkdir()  # a folder where the file is to go
    with pytest.raises(WriteError, match=r"model.pt \(Is a directory\); give a path of a file") as caught:
        save_torch({"epoch": 1}, tmp_path / "model.pt")
    assert isinstance(caught.value, OSError) and caught.value.strerror == "Is a directory"


def test_a_model_written_through_a_link_or_into_a_pipe_leaves_the_link_and_the_pipe_in_place(tmp_path: Path) -> None:
    # the rename that makes a write whole replaced whatever it landed on: a link to the model in
    # use became a file of its own (the model it named kept the old weights), and a FIFO or, run
    # as root, /dev/null became a regular file
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "v3.pt"
    save_torch({"epoch": 1}, target)
    target.chmod(0o640)
    link = tmp_path / "current.pt"
    link.symlink_to(target)
    save_torch({"epoch": 2}, link)
    assert link.is_symlink() and torch.load(target, weights_only=True) == {"epoch": 2}
    assert target.stat().st_mode & 0o777 == 0o640  # its permissions kept
    assert sorted(p.name for p in target.parent.iterdir()) == ["v3.pt"]

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        write_atomic(fifo, b"model bytes")
    finally:
        reader.join(timeout=10)
        if reader.is_alive():  # nobody wrote into the pipe: open and close it, so the reader ends
            # (non-blocking: a blocking open waits for a reader, and one that had just read and not
            # yet ended left the test hanging for good)
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(timeout=10)
    assert got == [b"model bytes"] and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_the_monitor_on_a_full_disk_runs_on_and_says_what_it_could_not_write(tmp_path: Path) -> None:
    # The limit also refuses shared memory (a segment is a file in /dev/shm): the engine process
    # could not start, and the monitor ended in a traceback before its first window. Now the model
    # runs in the monitor's own process, the --jsonl log that stops fitting is said in the summary
    # (it was counted and never shown), and the labels go on.
    done = run_on_a_full_disk("-m", "drsn_stream", "--source", "sim?machines=4", "--duration", "4", "--headless",
                              "--jsonl", "out.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert "the model runs in this process: an engine process cannot be started here" in said and "ulimit -f" in said
    assert "error: output JsonlSink: WriteError: --jsonl out.jsonl: cannot write (File too large)" in said, said[-3000:]
    assert "sim/m0" in done.stdout and "sim/m1" in done.stdout  # the labels, as ever
    assert (tmp_path / "out.jsonl").stat().st_size <= LIMIT

    done = run_on_a_full_disk("-m", "drsn_stream", "--source", "sim", "--duration", "1", "--engine-process", "on",
                              cwd=tmp_path)
    said_in_one_line(done, "--engine-process on: cannot start the engine process here", "--engine-process off")
    done = run_on_a_full_disk("-m", "drsn_stream", "--source", "zmq://127.0.0.1:9", "--duration", "1",
                              "--ingest-procs", "2", cwd=tmp_path)
    said_in_one_line(done, "--ingest-procs 2: cannot start ingest processes here", "--ingest-procs 1")


CAPTURE = """
import sys
import numpy as np
from drsn_stream.sinks.capture import CaptureConfig, EventCapture
from drsn_stream.types import Event, Frame
capture = EventCapture(sys.argv[1], CaptureConfig(pre_s=2.0, post_s=1.0))
for seq, a in enumerate(range(0, 40000, 1000)):  # 40 s at 1 kHz: a 3-s capture is a 12-kB WAV
    capture.push(Frame("sim/m0", seq, 1.7e9 + a / 1000, 1000.0, np.ones((1000, 1), np.float32)))
    if a == 20000:
        capture.on_event(Event("alarm", "sim/m0", 1.7e9 + 20.0, {"from": "NORMAL", "to": "ALERT"}))
print(capture.errors, len(capture.written), capture.last_error)
"""


def test_a_capture_that_does_not_fit_leaves_no_half_a_wav(tmp_path: Path) -> None:
    # the WAV was written in place: a full disk left a cut one that players and the file source read
    out = tmp_path / "captures"
    done = run_on_a_full_disk("-c", CAPTURE, str(out), cwd=tmp_path, limit=8000)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("1 0 cannot write capture ") and "File too large" in done.stdout, done.stdout
    assert leftovers(out) == []


def test_two_processes_writing_one_model_at_once_both_succeed_and_the_file_is_always_one_of_them_whole(
        tmp_path: Path) -> None:
    # two exports (or two hosts saving a shared profile) to one path at the same moment shared one
    # "PATH.tmp": the second truncated the first's half-written temp file, the first renamed that
    # into place, and the second's rename then failed on a temp file that was gone
    target = tmp_path / "model.pt"
    size, rounds = 1 << 21, 15
    script = (
        "import sys\nfrom drsn_stream.config import write_atomic\n"
        f"data = bytes([int(sys.argv[1])]) * {size}\n"
        f"for _ in range({rounds}):\n    write_atomic(sys.argv[2], data)\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(v), str(target)], stderr=subprocess.PIPE)
               for v in (1, 2, 3)]
    seen: list[tuple[int, int]] = []
    while any(w.poll() is None for w in writers):
        if target.exists():
            data = target.read_bytes()
            seen.append((len(data), len(set(data))))
    errors = [w.stderr.read().decode() for w in writers if w.wait() != 0]  # type: ignore[union-attr]
    assert errors == [], errors[0][-500:]
    assert all(s == (size, 1) for s in seen), [s for s in seen if s != (size, 1)][:5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file left


def test_a_model_whose_name_is_near_the_file_systems_limit_is_written_with_the_usual_permissions(
        tmp_path: Path) -> None:
    # the temporary file beside it has a longer name than the model's own
    name = "m" * 250 + ".pt"
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / name, b"model bytes")
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert (tmp_path / name).read_bytes() == b"model bytes" and (tmp_path / name).stat().st_mode & 0o777 == 0o644
