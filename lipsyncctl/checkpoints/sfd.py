"""The S3FD face detector of the official SyncNet evaluation: ``auxiliary/sfd_face.pth`` (LatentSync-1.5's
auxiliary files; syncnet_python's ``data/sfd_face.pth``), loaded strictly with its own key map.

Two S3FD weight layouts exist, with the same 65 tensors and shapes under different names:

============================  ==========================================  ===============================
our name                      ``sfd_face.pth`` (syncnet_python S3FDNet)   face-alignment ``s3fd-*.pth``
============================  ==========================================  ===============================
``conv1_1`` .. ``conv5_3``    ``vgg.0 2 5 7 10 12 14 17 19 21 24 26 28``  ``conv1_1`` .. ``conv5_3``
``fc6`` / ``fc7``             ``vgg.31`` / ``vgg.33``                     ``fc6`` / ``fc7``
``norm3_3/4_3/5_3.weight``    ``L2Norm3_3/4_3/5_3.weight``                ``conv3_3_norm.weight`` ...
``conv6_1 6_2 7_1 7_2``       ``extras.0 1 2 3``                          ``conv6_1`` ...
``loc.0..5`` / ``conf.0..5``  ``loc.0..5`` / ``conf.0..5``                ``conv3_3_norm_mbox_loc`` ...
============================  ==========================================  ===============================

(``vgg.N`` counts the parameter-free ReLU and pooling slots of the official ``nn.ModuleList``.) The two
networks also differ in computation (face-alignment's ``fc6`` is not dilated and its pools round down),
so a face-alignment file is refused here rather than renamed: its boxes would not be the official ones.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lipsyncctl.checkpoints.io import read_checkpoint
from lipsyncctl.checkpoints.keys import check_state_dict
from lipsyncctl.checkpoints.loaders import LoadPlan, _expect_container
from lipsyncctl.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from lipsyncctl.nets.s3fd import S3FD

PathLike = str | os.PathLike[str]

#: our module -> the official module name (``sfd_face.pth``)
_MODULES: dict[str, str] = {
    **{name: f"vgg.{i}" for name, i in zip(
        ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2",
         "conv4_3", "conv5_1", "conv5_2", "conv5_3", "fc6", "fc7"),
        (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33), strict=True)},
    "norm3_3": "L2Norm3_3", "norm4_3": "L2Norm4_3", "norm5_3": "L2Norm5_3",
    "conv6_1": "extras.0", "conv6_2": "extras.1", "conv7_1": "extras.2", "conv7_2": "extras.3",
    **{f"{head}.{i}": f"{head}.{i}" for head in ("loc", "conf") for i in range(6)},
}
WHAT = "S3FD face detector (sfd_face.pth layout)"
HINT = ("expected LatentSync-1.5's auxiliary/sfd_face.pth (syncnet_python's S3FD: vgg.N / L2Norm3_3 / extras / "
        "loc / conf names); run `lipsyncctl models fetch sfd-face`")


def official_name(ours: str) -> str:
    """``conv4_2.weight`` -> ``vgg.19.weight``."""
    module, _, leaf = ours.rpartition(".")
    return f"{_MODULES[module]}.{leaf}"


def key_map() -> dict[str, str]:
    """Official name -> our name, for every tensor of the network."""
    import torch

    from lipsyncctl.nets.s3fd import S3FD

    with torch.device("meta"):
        names = list(S3FD().state_dict())
    return {official_name(n): n for n in names}


def expected_official_shapes() -> dict[str, tuple[int, ...]]:
    """Official name -> shape (what ``sfd_face.pth`` must hold, exactly)."""
    import torch

    from lipsyncctl.nets.s3fd import S3FD

    with torch.device("meta"):
        state = S3FD().state_dict()
    return {official_name(n): tuple(t.shape) for n, t in state.items()}


def plan_sfd_face(path: PathLike) -> LoadPlan:
    """The strict load plan of ``sfd_face.pth``: every official name present, nothing else, shapes equal;
    names are then mapped to ours.

    Raises:
        CheckpointError: another container, face-alignment's layout, or any name/shape difference (the
            report uses the file's names).
    """
    from lipsyncctl.nets.s3fd import S3FD

    ck = read_checkpoint(path)
    _expect_container(ck, ("state_dict", "flat"), "an S3FD state dict")
    if "conv3_3_norm_mbox_conf.weight" in ck.state_dict:
        raise CheckpointError(
            f"{ck.path} is face-alignment's S3FD (conv3_3_norm_mbox_* names), not the official evaluation's "
            "sfd_face.pth: its network differs (fc6 not dilated, pools rounding down)",
            hint=HINT,
        )
    check_state_dict(expected_official_shapes(), ck.state_dict, what=WHAT, source=ck.path, hint=HINT)
    names = key_map()
    state = {names[k]: v for k, v in ck.state_dict.items()}
    return LoadPlan(WHAT, ck.path, S3FD, state, hint=HINT)


def load_sfd_face(path: PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> S3FD:
    """Load ``sfd_face.pth`` into :class:`~lipsyncctl.nets.s3fd.S3FD` (eval mode), strictly."""
    return plan_sfd_face(path).execute(device, dtype)


def save_official(model: S3FD, path: PathLike) -> None:
    """Write ``model`` as the official file does (a flat ``torch.save`` of the official names); for
    tests and conversions."""
    import torch

    torch.save({official_name(k): v.detach().cpu() for k, v in model.state_dict().items()}, path)
