"""The installed environment keeps the promises the README makes about dependencies."""

from __future__ import annotations

import importlib.metadata as md

import pytest


def test_exactly_one_opencv_distribution_and_it_imports() -> None:
    names = sorted(
        (d.metadata["Name"] or "").lower() for d in md.distributions() if (d.metadata["Name"] or "").lower().startswith("opencv")
    )
    assert len(set(names)) == 1, f"several OpenCV distributions share the cv2/ folder: {names}"
    import cv2

    assert int(cv2.__version__.split(".")[0]) >= 4
    assert cv2.resize is not None and cv2.warpAffine is not None


def test_torch_meets_the_declared_floor() -> None:
    import torch

    # The project requires torch>=2.6; bootstrap installs TORCH_SPEC first and never lets a dependency replace it.
    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    assert (major, minor) >= (2, 6)


def test_mkl_takes_its_reproducible_mode_before_its_first_call_only() -> None:
    """``reproducible_cpu_math`` in a fresh process (no MKL_CBWR in its environment): before the first matrix
    product MKL takes the alignment-independent mode and the children inherit it; after one, it says it could not
    (the training loop then says so). Without MKL (another BLAS) there is nothing to set."""
    import os
    import subprocess
    import sys

    import torch

    if "BLAS_INFO=mkl" not in torch.__config__.show():
        pytest.skip("this torch build's BLAS is not MKL")
    code = """
import os, sys, torch
from lipsyncctl.runner.devices import MKL_CBWR, reproducible_cpu_math
if sys.argv[1] == "late":
    a = torch.randn(64, 64); a @ a
print(reproducible_cpu_math(), os.environ["MKL_CBWR"] == MKL_CBWR)
"""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    for when, expected in (("early", "True True"), ("late", "False True")):
        done = subprocess.run([sys.executable, "-c", code, when], env=env, capture_output=True, text=True, check=True)
        assert done.stdout.strip() == expected, (when, done.stdout, done.stderr)
