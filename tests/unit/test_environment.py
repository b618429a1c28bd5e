"""The installed environment keeps the promises the README makes about dependencies."""

from __future__ import annotations

import importlib.metadata as md


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
