"""Shared test fixtures: the ../shared data folder, a socket guard, an isolated models dir."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from lipsyncctl.runner.devices import MKL_CBWR

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# MKL's alignment-independent results from the first matrix product of the test process on: runs in one process
# repeat those of another bit for bit (lipsyncctl.api sets the same for its entry points; see runner/devices)
os.environ.setdefault("MKL_CBWR", MKL_CBWR)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with a clear reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found beside the checkout: {SHARED}")
    return SHARED


_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address):  # type: ignore[no-untyped-def]
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")) or self.family == socket.AF_UNIX:
        return _real_connect(self, address)
    raise RuntimeError(f"network access blocked in tests: {address!r}")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing downloads in tests: only loopback and unix sockets may connect."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, isolated models directory (LIPSYNCCTL_MODELS)."""
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("LIPSYNCCTL_MODELS", str(d))
    return d
