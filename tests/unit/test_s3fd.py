"""The official evaluation's S3FD: network layout in the ``sfd_face.pth`` names, strict loading through the
real loader and the registry, anchors/decoding/NMS, and the detector's pre/post-processing.

The name/shape table below was written from syncnet_python's ``detectors/s3fd/nets.py`` (``S3FDNet``:
``vgg`` ModuleList with ReLU/pool slots, ``L2Norm3_3/4_3/5_3``, ``extras``, ``loc``, ``conf``), not from
our module. Random weights are saved in that layout with ``torch.save`` of a flat dict, as the file is.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsyncctl.checkpoints.sfd import expected_official_shapes, load_sfd_face, plan_sfd_face, save_official
from lipsyncctl.errors import CheckpointError
from lipsyncctl.nets.s3fd import S3FD, box_nms, decode_boxes, detections, prior_boxes


def _conv(cin: int, cout: int, k: int = 3) -> dict[str, tuple[int, ...]]:
    return {"weight": (cout, cin, k, k), "bias": (cout,)}


#: module -> parameter shapes, in the official names (syncnet_python S3FDNet)
OFFICIAL: dict[str, dict[str, tuple[int, ...]]] = {
    "vgg.0": _conv(3, 64), "vgg.2": _conv(64, 64),
    "vgg.5": _conv(64, 128), "vgg.7": _conv(128, 128),
    "vgg.10": _conv(128, 256), "vgg.12": _conv(256, 256), "vgg.14": _conv(256, 256),
    "vgg.17": _conv(256, 512), "vgg.19": _conv(512, 512), "vgg.21": _conv(512, 512),
    "vgg.24": _conv(512, 512), "vgg.26": _conv(512, 512), "vgg.28": _conv(512, 512),
    "vgg.31": _conv(512, 1024), "vgg.33": _conv(1024, 1024, 1),
    "L2Norm3_3": {"weight": (256,)}, "L2Norm4_3": {"weight": (512,)}, "L2Norm5_3": {"weight": (512,)},
    "extras.0": _conv(1024, 256, 1), "extras.1": _conv(256, 512),
    "extras.2": _conv(512, 128, 1), "extras.3": _conv(128, 256),
    **{f"loc.{i}": _conv(c, 4) for i, c in enumerate((256, 512, 512, 1024, 512, 256))},
    **{f"conf.{i}": _conv(c, 4 if i == 0 else 2) for i, c in enumerate((256, 512, 512, 1024, 512, 256))},
}
OFFICIAL_SHAPES = {f"{m}.{leaf}": shape for m, params in OFFICIAL.items() for leaf, shape in params.items()}


def _random_net(seed: int = 0) -> S3FD:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return S3FD().eval()


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, S3FD]:
    net = _random_net()
    path = tmp_path_factory.mktemp("sfd") / "sfd_face.pth"
    save_official(net, path)
    return path, net


def test_network_has_the_official_names_shapes_and_size() -> None:
    assert len(OFFICIAL_SHAPES) == 65
    assert expected_official_shapes() == OFFICIAL_SHAPES
    with torch.device("meta"):
        net = S3FD()
    count = sum(p.numel() for p in net.parameters())
    assert count == sum(math.prod(s) for s in OFFICIAL_SHAPES.values()) == 22_459_110
    assert net.fc6.dilation == (6, 6) and net.fc6.padding == (6, 6)  # official fc6; face-alignment's is not dilated
    fresh = S3FD()
    assert (fresh.norm3_3.weight == 10).all() and (fresh.norm4_3.weight == 8).all() and (fresh.norm5_3.weight == 5).all()


def test_file_layout_is_flat_official_and_loads_strictly(official_file: tuple[Path, S3FD]) -> None:
    path, net = official_file
    raw = torch.load(path, weights_only=True)
    assert {k: tuple(v.shape) for k, v in raw.items()} == OFFICIAL_SHAPES
    loaded = load_sfd_face(path)
    x = torch.randn(1, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b = net(x), loaded(x)
    assert torch.equal(a.loc, b.loc) and torch.equal(a.scores, b.scores) and torch.equal(a.priors, b.priors)
    assert not loaded.training
    from lipsyncctl.checkpoints.info import detect_kind
    from lipsyncctl.checkpoints.loaders import check_checkpoint

    assert detect_kind(raw) == "sfd-face"
    assert check_checkpoint("sfd-face", path).ok


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop", "missing (1): L2Norm4_3.weight"),
        ("extra", "unexpected (1): vgg.35.weight"),
        ("shape", "conf.0.weight [4, 256, 3, 3] expected, [2, 256, 3, 3] found"),
        ("prefix", "unexpected (65)"),
        ("face-alignment", "face-alignment's S3FD"),
    ],
)
def test_any_key_difference_fails_clearly(official_file: tuple[Path, S3FD], tmp_path: Path, change: str,
                                          message: str) -> None:
    state = torch.load(official_file[0], weights_only=True)
    if change == "drop":
        del state["L2Norm4_3.weight"]
    elif change == "extra":
        state["vgg.35.weight"] = torch.zeros(3)
    elif change == "shape":
        state["conf.0.weight"] = torch.zeros(2, 256, 3, 3)
    elif change == "prefix":
        state = {f"net.{k}": v for k, v in state.items()}
    else:  # face-alignment's names for the same tensors
        state = {"conv3_3_norm_mbox_conf.weight": torch.zeros(4, 256, 3, 3), "conv1_1.weight": torch.zeros(64, 3, 3, 3)}
    bad = tmp_path / "sfd_face.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as err:
        plan_sfd_face(bad)
    text = str(err.value) + (err.value.hint or "")
    assert message in text and str(bad) in text
    assert "sfd_face.pth" in (err.value.hint or "")


def test_registry_entry_and_fetchable() -> None:
    from lipsyncctl.checkpoints.registry import load_registry

    entry = load_registry().get("sfd-face")
    (f,) = entry.files
    assert (f.role, f.path, f.hub.repo, f.hub.filename) == (
        "sfd-face", "auxiliary/sfd_face.pth", "ByteDance/LatentSync-1.5", "auxiliary/sfd_face.pth")
    assert f.sha256 is None  # no published hash


def test_official_scorer_loads_through_the_registry(official_file: tuple[Path, S3FD], tmp_path: Path) -> None:
    import shutil

    from lipsyncctl.checkpoints.registry import load_registry
    from lipsyncctl.scoring.official import load_official_scorer

    assert load_official_scorer(object(), models_dir=tmp_path) is None  # not installed: None, no download
    entry = load_registry().get("sfd-face")
    dest = entry.local_path(entry.files[0], tmp_path)
    dest.parent.mkdir(parents=True)
    shutil.copy(official_file[0], dest)
    scorer = load_official_scorer("syncnet", models_dir=tmp_path)
    assert scorer is not None and scorer.detector_path == dest and scorer.syncnet == "syncnet"
    assert torch.equal(scorer.detector.net.conv1_1.weight, official_file[1].conv1_1.weight)


def test_priors_decode_and_nms() -> None:
    # image 8 high x 16 wide, one 2x4 map at stride 4: centres (j + 0.5) * 4 / 16, (i + 0.5) * 4 / 8
    p = prior_boxes([(2, 4)], (8, 16))
    assert p.shape == (8, 4)
    assert p[:4, 0].tolist() == [0.125, 0.375, 0.625, 0.875] and p[::4, 1].tolist() == [0.25, 0.75]
    assert p[0, 2:].tolist() == [1.0, 2.0]  # anchor 16 px: 16/16 wide, 16/8 high
    boxes = decode_boxes(torch.zeros(8, 4), p)
    assert boxes[0].tolist() == [-0.375, -0.75, 0.625, 1.25]  # zero offsets: the anchor itself
    loc = torch.tensor([[1.0, -1.0, math.log(2) / 0.2, 0.0]])
    (b,) = decode_boxes(loc, torch.tensor([[0.5, 0.5, 0.2, 0.4]]))
    # centre moves by 0.1 * size, width doubles
    assert torch.allclose(b, torch.tensor([0.52 - 0.2, 0.46 - 0.2, 0.52 + 0.2, 0.46 + 0.2]))
    rects = torch.tensor([[0, 0, 10, 10], [8, 0, 18, 10], [20, 20, 30, 30], [0, 0, 10, 5]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # best first: 3 kept; IoU(3, 0) = 50/100 > 0.3 -> 0 dropped; IoU(3, 1) = 10/140 -> 1 kept; 2 apart
    assert box_nms(rects, scores, 0.3, 5000).tolist() == [3, 1, 2]
    assert box_nms(rects, scores, 0.3, 2).tolist() == [3]  # only the 2 best are considered


def _rigged_net() -> S3FD:
    """Heads that ignore the image: zero offsets (boxes = anchors) and a confident face only on
    source 4 (conv6_2: stride 64, anchor 256)."""
    net = _random_net(1)
    with torch.no_grad():
        for i, (loc, conf) in enumerate(zip(net.loc, net.conf, strict=True)):
            loc.weight.zero_(), loc.bias.zero_(), conf.weight.zero_()
            conf.bias.copy_(torch.tensor([10.0, -10.0] * (conf.bias.numel() // 2)))
            if i == 4:
                conf.bias.copy_(torch.tensor([-10.0, 10.0]))
    return net


def test_detector_scales_thresholds_and_nms_like_the_official_code() -> None:
    from lipsyncctl.faces.detect_sfd import SfdFaceDetector, nms_numpy

    det = SfdFaceDetector(_rigged_net())
    mean_image = np.broadcast_to(np.array([123, 117, 104], np.uint8), (256, 256, 3)).copy()
    assert np.array_equal(det.network_input(mean_image), np.zeros((3, 64, 64), np.float32))  # RGB - (123,117,104)
    out = det.net(torch.from_numpy(det.network_input(mean_image))[None])
    assert out.loc.shape[1] == 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1 + 1  # 64x64 input: maps /4 ... /128
    assert len(detections(out)[0]) == 1
    boxes = det.detect_faces(mean_image)
    # the one 1x1 cell of source 4: centre (0.5, 0.5), anchor 256/64 = 4 image widths -> x 256 px
    assert boxes.shape == (1, 5) and boxes.dtype == np.float64
    assert boxes[0, :4].tolist() == [-384.0, -384.0, 640.0, 640.0] and boxes[0, 4] > 0.999
    det.conf_th = 1.0
    assert det.detect_faces(mean_image).shape == (0, 5)
    dets = np.array([[0, 0, 10, 10, 0.9], [10, 0, 20, 10, 0.8], [0, 0, 10, 10.5, 0.95], [19, 0, 29, 10, 0.7]])
    # final NMS at 0.1: 0 overlaps 2 (100/105); 1 touches 2 (IoU 0) and stays; 3 overlaps 1 by 10/190 <= 0.1
    assert nms_numpy(dets, 0.1).tolist() == [2, 1, 3]
