"""The golden training vectors' counter-based hash weights (``shared/golden/train/README.md``, "hash-generated
weights"): the weights of networks too big to store (hyperIQA's HyperNet, the VGG16 of LPIPS) are a pure
function of the official state-dict name, reproduced here once for every test that rebuilds them."""

from __future__ import annotations

import hashlib
import zlib

import numpy as np


def hash_int10(name: str, n: int) -> np.ndarray:
    """The README's counter-based hash: int64 values in [-512, 511]."""
    seed = np.uint64(zlib.crc32(name.encode("ascii")) & 0xFFFFFFFF)
    m = np.uint64(0xFFFFFFFF)
    x = (np.arange(n, dtype=np.uint64) + seed) & m
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & m
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & m
    x ^= x >> np.uint64(16)
    return (x >> np.uint64(22)).astype(np.int64) - 512


def hash_tensor(name: str, shape: list[int], scale: float, offset: float = 0.0) -> np.ndarray:
    """``float32`` weights of ``shape`` (C order): ``hash_int10 * scale (+ offset)``."""
    w = hash_int10(name, int(np.prod(shape))).astype(np.float32) * np.float32(scale)
    return (w + np.float32(offset) if offset else w).reshape(shape)


def sha256_f32(array: np.ndarray) -> str:
    """The sidecars' tensor digest: SHA-256 of the float32 values, C order, little endian."""
    return hashlib.sha256(np.ascontiguousarray(array).astype("<f4").tobytes()).hexdigest()
