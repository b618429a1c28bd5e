"""`lipsyncctl models ...` in-process: list, fetch (fake hub on 127.0.0.1), verify, convert, info, path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lipsyncctl.cli.main import main
from tests.fakehub import serve
from tests.unit.test_checkpoints_loaders import TINY_VAE


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_json_reports_known_and_installed(models_dir: Path, capsys) -> None:
    rc, out, _ = run(capsys, "--json", "models", "list")
    assert rc == 0
    data = json.loads(out)
    assert data["models_dir"] == str(models_dir) and data["models_dir_source"] == "LIPSYNCCTL_MODELS"
    rows = {r["name"]: r for r in data["models"]}
    assert {"latentsync-1.5", "latentsync-1.6", "face-alignment"} <= set(rows)
    assert data["ok"] is True
    assert all(r["installed"] is False and r["partial"] is False for r in rows.values())
    (models_dir / "whisper-tiny").mkdir()
    (models_dir / "whisper-tiny" / "tiny.pt").write_bytes(b"x" * 10)
    rc, out, _ = run(capsys, "--json", "models", "list")
    row = {r["name"]: r for r in json.loads(out)["models"]}["whisper-tiny"]
    assert row["installed"] is True and row["files"][0]["local_path"] == str(models_dir / "whisper-tiny" / "tiny.pt")
    rc, out, _ = run(capsys, "models", "list")
    assert rc == 0 and "whisper-tiny" in out and str(models_dir) in out


def test_fetch_then_verify_then_corrupt(models_dir: Path, capsys, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    """The real registry entry sd-vae-ft-mse, served by a fake hub (a tiny VAE stands in for the weights)."""
    import huggingface_hub.constants as hf_constants
    from diffusers import AutoencoderKL

    AutoencoderKL(**TINY_VAE).save_pretrained(str(tmp_path / "src"))
    config = (tmp_path / "src" / "config.json").read_bytes()
    weights = (tmp_path / "src" / "diffusion_pytorch_model.safetensors").read_bytes()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with serve() as hub:
        hub.add_hub_file("stabilityai/sd-vae-ft-mse", "config.json", config)
        hub.add_hub_file("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors", weights)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        rc, out, err = run(capsys, "--json", "models", "fetch", "sd-vae-ft-mse")
    assert rc == 0, err
    fetched = json.loads(out)["models"][0]
    assert fetched["model"] == "sd-vae-ft-mse" and {f["status"] for f in fetched["files"]} == {"downloaded"}
    folder = models_dir / "sd-vae-ft-mse"
    assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    assert "sd-vae-ft-mse/config.json" in (models_dir / "local.yaml").read_text()

    # The stand-in is a VAE, self-consistent, but not sd-vae-ft-mse's architecture: verify says so (it passed
    # any VAE), and the rest of this test lets it stand in
    rc, out, err = run(capsys, "--json", "models", "verify")
    assert rc == 4 and "not sd-vae-ft-mse: block_out_channels [8, 16] (expected [128, 256, 512, 512])" in out
    from lipsyncctl.checkpoints import verify as verify_mod

    monkeypatch.setattr(verify_mod, "_architecture_problem", lambda role, config: "")
    rc, out, err = run(capsys, "--json", "models", "verify")
    assert rc == 0, err
    checked = json.loads(out)["models"]
    assert [c["name"] for c in checked] == ["sd-vae-ft-mse"] and checked[0]["ok"]
    assert all(f["sha256_origin"] == "local" for f in checked[0]["files"])

    # Same size, different bytes: the recorded hash catches it -> exit 4 with a hint.
    data = bytearray(weights)
    data[-1] ^= 0xFF
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(bytes(data))
    rc, out, err = run(capsys, "models", "verify", "sd-vae-ft-mse")
    assert rc == 4
    assert "hash-mismatch" in out
    assert "failed verification: sd-vae-ft-mse" in err and "models fetch sd-vae-ft-mse --force" in err
    # Hashing off, loading on: the bytes still parse, so only the hash could tell.
    rc, _, _ = run(capsys, "models", "verify", "sd-vae-ft-mse", "--no-hash")
    assert rc == 0


def test_verify_missing_and_unloadable(models_dir: Path, capsys) -> None:
    rc, _, err = run(capsys, "models", "verify")
    assert rc == 4 and "no models are installed" in err
    rc, out, err = run(capsys, "--json", "models", "verify", "latentsync-1.5")
    assert rc == 4 and "not (fully) installed" in err and "models fetch latentsync-1.5" in err
    assert {f["status"] for f in json.loads(out)["models"][0]["files"]} == {"missing"}
    # A file that is there but is not a whisper checkpoint.
    (models_dir / "whisper-tiny").mkdir()
    torch.save({"state_dict": {"w": torch.zeros(2)}}, models_dir / "whisper-tiny" / "tiny.pt")
    rc, out, err = run(capsys, "--json", "models", "verify", "whisper-tiny", "--no-hash")
    assert rc == 4
    f = json.loads(out)["models"][0]["files"][0]
    assert f["status"] == "unloadable" and "openai-whisper" in f["detail"]
    rc, _, err = run(capsys, "models", "verify", "no-such-model")
    assert rc == 4 and "known:" in err


def test_convert_info_path(models_dir: Path, capsys, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tests.conftest import shared_path

    ev = load_file(str(shared_path("golden", "syncnet_eval_weights_fp16.safetensors")))
    (models_dir / "syncnet-v2" / "auxiliary").mkdir(parents=True)
    src = models_dir / "syncnet-v2" / "auxiliary" / "syncnet_v2.model"
    torch.save(ev, src)
    rc, out, _ = run(capsys, "models", "path", "syncnet-v2")
    assert rc == 0 and out.strip() == str(src)
    rc, _, err = run(capsys, "models", "path", "latentsync-1.6", "unet")
    assert rc == 4 and "models fetch latentsync-1.6" in err

    out_file = tmp_path / "ev.safetensors"
    rc, out, err = run(capsys, "--json", "models", "convert", str(src), str(out_file))
    assert rc == 0, err
    assert json.loads(out)["kind"] == "syncnet-eval"
    rc, _, err = run(capsys, "models", "convert", str(src), str(out_file))
    assert rc == 2 and "--overwrite" in err
    rc, out, _ = run(capsys, "--json", "models", "info", str(out_file))
    info = json.loads(out)
    assert info["kind"] == "syncnet-eval" and info["container"] == "lipsyncctl" and info["num_tensors"] == len(ev)
    assert info["dtypes"] == {"float16": len(ev) - sum(1 for k in ev if k.endswith("num_batches_tracked")),
                              "int64": sum(1 for k in ev if k.endswith("num_batches_tracked"))}
    rc, out, _ = run(capsys, "models", "info", str(src))
    assert rc == 0 and "syncnet-eval" in out
    rc, _, err = run(capsys, "models", "info", str(tmp_path / "missing.pt"))
    assert rc == 5 and "no such file or folder" in err  # a missing input: bad media, as in every command


def test_verify_checks_the_architecture_a_file_names_and_a_damaged_archive(models_dir: Path, capsys) -> None:
    """A whisper file names its own dims, so any whisper loaded strictly: one of another size passed as
    LatentSync's whisper tiny (sync then failed with an internal error mid-run). And a torch archive damaged
    inside, with no hash known, passed: its members' CRCs now catch it."""
    from lipsyncctl.checkpoints.tiny import WHISPER_TINY_DIMS, tiny_whisper_state_dict

    dest = models_dir / "latentsync-1.5" / "whisper" / "tiny.pt"
    dest.parent.mkdir(parents=True)
    other = {**WHISPER_TINY_DIMS, "n_audio_state": 64, "n_audio_head": 2, "n_audio_layer": 2}  # not tiny's
    torch.save({"dims": other, "model_state_dict": tiny_whisper_state_dict(torch.Generator().manual_seed(0), other)},
               dest)
    rc, out, err = run(capsys, "--json", "models", "verify", "latentsync-1.5", "--no-hash")
    row = next(f for f in json.loads(out)["models"][0]["files"] if f["path"] == "whisper/tiny.pt")
    assert rc == 4 and row["status"] == "unloadable"
    assert row["detail"].startswith("not whisper tiny's encoder: n_audio_state")
    data = bytearray(dest.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"\xff" * 64
    dest.write_bytes(bytes(data))
    rc, out, err = run(capsys, "--json", "models", "verify", "latentsync-1.5", "--no-hash")
    row = next(f for f in json.loads(out)["models"][0]["files"] if f["path"] == "whisper/tiny.pt")
    assert rc == 4 and "damaged archive: member" in row["detail"]


def test_a_wrong_kind_or_a_clip_given_as_weights_is_said_as_such(models_dir: Path, capsys, tmp_path: Path) -> None:
    """``models convert --kind nosuch`` is a bad argument (2; it said "detected: nosuch", exit 4, after reading the
    file); a video given to ``models info`` is a media file, not a damaged checkpoint to fetch again."""
    from lipsyncctl.paths import DATA_DIR

    weights = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(2)}, weights)
    assert main(["models", "convert", str(weights), str(tmp_path / "o.safetensors"), "--kind", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "--kind nosuch: not a kind converted" in err and "unet" in err and "detected" not in err
    assert main(["models", "info", str(DATA_DIR / "sample.mp4")]) == 4
    err = capsys.readouterr().err
    assert "sample.mp4 is a media file, not model weights" in err and "fetch it again" not in err
    assert main(["prune", str(DATA_DIR / "sample.mp4")]) == 5
    assert "sample.mp4: a file, not a folder" in capsys.readouterr().err
