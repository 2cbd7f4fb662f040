"""One TorchScript file per model, with versioned metadata; bad files give one clear error."""

from __future__ import annotations

import json
import re
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from drsn_stream.errors import ArtifactError
from drsn_stream.models import ArtifactMeta, create_model, load_artifact, read_meta, save_artifact

LABELS = ["normal", "ball", "inner", "outer"]


def _meta() -> ArtifactMeta:
    return ArtifactMeta(
        name="test-model",
        model="drsn_cw_paper",
        labels=LABELS,
        sample_rate=12000,
        window=2048,
        hop=512,
        training={"data": "unit test", "split": {"test": "last 25 % of each recording"}},
        accuracy={"clean": 0.5},
    )


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model("drsn_cw_paper", num_classes=len(LABELS)).eval()
    path = save_artifact(model, tmp_path_factory.mktemp("a") / "m.pt", _meta())
    return path, model


def test_round_trip_keeps_outputs_and_metadata(artifact: tuple[Path, torch.nn.Module]) -> None:
    path, model = artifact
    module, meta = load_artifact(path)
    assert meta.labels == LABELS and meta.window == 2048 and meta.hop == 512 and meta.sample_rate == 12000
    assert meta.torch_version == torch.__version__ and meta.format_version == 1
    assert meta.training["split"]["test"].startswith("last 25")
    x = torch.randn(3, 2048)
    with torch.no_grad():
        a, na = module(x)
        b, nb = model(x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(na, nb)
    assert read_meta(path).to_dict() == meta.to_dict()


def test_truncated_file_is_refused_with_its_name(artifact: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = artifact
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="truncated.pt.*(truncated|corrupt)"):
        load_artifact(bad)


def test_corrupt_bytes_are_refused(artifact: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = artifact
    data = bytearray(path.read_bytes())
    # flip bytes inside the stored weights: the zip CRC no longer matches
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt.pt"):
        load_artifact(bad)


def _record_start(data: bytes, info: zipfile.ZipInfo) -> int:
    """Where the bytes of an archive member begin (after its local header)."""
    off = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[off + 26 : off + 30])
    return off + 30 + name_len + extra_len


def test_one_flipped_bit_in_the_weights_is_refused_not_run(artifact: tuple[Path, torch.nn.Module],
                                                           tmp_path: Path) -> None:
    """Before: TorchScript loaded a model one of whose weights a flipped bit had changed, and it
    ran with the changed weight without a word; the archive's checksums say so."""
    path, _ = artifact
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        weights = max((i for i in zf.infolist() if "/data/" in i.filename and i.compress_type == zipfile.ZIP_STORED),
                      key=lambda i: i.file_size)
    data[_record_start(bytes(data), weights) + weights.file_size // 2] ^= 0x10
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        changed = torch.jit.load(str(bad))  # TorchScript alone takes it
    same = load_artifact(path)[0].state_dict()
    assert [k for k, v in changed.state_dict().items() if not torch.equal(v, same[k])], "no weight changed"
    with pytest.raises(ArtifactError, match=f"flipped.pt: damaged: {re.escape(weights.filename)} does not match the checksum"):
        load_artifact(bad)


def test_an_archive_directory_with_a_damaged_name_is_refused_in_words(artifact: tuple[Path, torch.nn.Module],
                                                                       tmp_path: Path) -> None:
    """Before: a member's name that says UTF-8 but is not raised UnicodeDecodeError from zipfile."""
    path, _ = artifact
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")  # the last member's entry in the central directory
    data[central + 8 : central + 10] = (struct.unpack("<H", data[central + 8 : central + 10])[0] | 0x800).to_bytes(2, "little")
    data[central + 46] = 0xBC  # its name's first byte: no UTF-8 starts so
    bad = tmp_path / "badname.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="badname.pt: cannot read the archive"):
        load_artifact(bad)


def test_foreign_torchscript_without_metadata_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(foreign))
    with pytest.raises(ArtifactError, match="foreign.pt.*without drsn-stream metadata"):
        load_artifact(foreign)


def test_a_training_checkpoint_given_as_the_model_says_how_to_export_it(tmp_path: Path) -> None:
    # a run's best.pt (torch.save: weights, no code) was "a TorchScript/zip file without metadata"
    best = tmp_path / "best.pt"
    torch.save({"model_state": torch.nn.Linear(3, 2).state_dict()}, best)
    says = f"{best}: a training checkpoint, not an exported model; export it first: drsn-stream export --checkpoint {best}"
    with pytest.raises(ArtifactError, match=re.escape(says)):
        load_artifact(best)


def test_text_file_and_missing_file_are_refused(tmp_path: Path) -> None:
    txt = tmp_path / "notes.pt"
    txt.write_text("hello")
    with pytest.raises(ArtifactError, match="notes.pt.*not a TorchScript archive"):
        load_artifact(txt)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nope.pt")
    with pytest.raises(ArtifactError, match="no built-in model named 'nope'"):
        load_artifact("nope")
    (tmp_path / "models.pt").mkdir()  # it said "does not exist"
    with pytest.raises(ArtifactError, match="models.pt is a folder, not a model file"):
        load_artifact(tmp_path / "models.pt")


def test_metadata_that_disagrees_with_the_model_is_refused(tmp_path: Path) -> None:
    model = create_model("drsn_cw_paper", num_classes=3).eval()
    meta = _meta()  # four labels, but the model has three outputs
    path = save_artifact(model, tmp_path / "mismatch.pt", meta)
    with pytest.raises(ArtifactError, match="mismatch.pt.*4 labels"):
        load_artifact(path)


def test_newer_format_version_asks_for_an_upgrade(artifact: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = artifact
    newer = tmp_path / "newer.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(newer, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("metadata.json"):
                d = json.loads(data)
                d["format_version"] = 99
                data = json.dumps(d).encode()
            dst.writestr(item, data)
    with pytest.raises(ArtifactError, match="newer.pt.*upgrade drsn-stream"):
        load_artifact(newer)


def test_a_write_that_fails_leaves_no_half_written_file_beside(tmp_path: Path) -> None:
    # the tools each removed save_artifact's .tmp after a failed write; one that did not left it
    (tmp_path / "model.pt").mkdir()  # a folder where the file is to go: the last step fails
    model = create_model("drsn_cw_paper", num_classes=4).eval()
    with pytest.raises(OSError):
        save_artifact(model, tmp_path / "model.pt", _meta())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
