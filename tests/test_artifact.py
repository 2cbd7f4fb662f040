"""One TorchScript file per model, with versioned metadata; bad files give one clear error."""

from __future__ import annotations

import json
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


def test_foreign_torchscript_without_metadata_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(foreign))
    with pytest.raises(ArtifactError, match="foreign.pt.*without drsn-stream metadata"):
        load_artifact(foreign)


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
