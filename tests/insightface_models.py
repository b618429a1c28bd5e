"""A tiny ``buffalo_l`` pack in InsightFace's own file formats, for testing the insightface backend offline.

The real ``det_10g.onnx`` (SCRFD) and ``2d106det.onnx`` cannot be downloaded here, so these are small ONNX
networks with the same inputs and outputs, which InsightFace routes and runs like the real ones (by their
shapes: nine outputs make an SCRFD with strides 8/16/32, two anchors and key points; a 192x192 input with 212
outputs the ``landmark_2d_106`` model). Their weights are set by hand, not trained, so that what they find is
known exactly:

- the detector averages each 32x32 cell of its input's **first blob channel** (InsightFace's ``blobFromImage``
  swaps R and B: the image's third channel) and scores a cell ``sigmoid(20 x mean - 10)``: a cell of value 255
  there scores 0.99995, a dark one ~0; the finer strides score ~0 everywhere. Every anchor's box reaches
  :data:`REACH` strides (64 px) from the anchor point (the cell's top-left corner) on each side, so a cell at
  ``(x, y)`` gives the box ``(x - 64, y - 64, x + 64, y + 64)`` at the detector's input scale;
- the landmark model ignores its input and puts the 106 points on a circle of radius :data:`RADIUS` (in its
  [-1, 1] output units) around the crop's centre: in the image, a circle of ``RADIUS * 0.75 * max(w, h)``
  around the box's centre (InsightFace crops 1.5 x the box's longer side to 192 px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STRIDES = (8, 16, 32)
#: the only stride that finds anything, and how far its boxes reach (in strides) on each side of the anchor
FIND_STRIDE, REACH = 32, 2
RADIUS = 0.5
N_POINTS = 106


def _detector():  # type: ignore[no-untyped-def]
    from onnx import TensorProto, helper

    nodes, outputs, inits = [], [], []

    def const(name: str, values: np.ndarray) -> str:
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, values.shape, values.astype(np.float32).ravel()))
        return name

    inits.append(helper.make_tensor("ch_start", TensorProto.INT64, [1], [0]))
    inits.append(helper.make_tensor("ch_end", TensorProto.INT64, [1], [1]))
    inits.append(helper.make_tensor("ch_axis", TensorProto.INT64, [1], [1]))
    inits.append(helper.make_tensor("flat", TensorProto.INT64, [2], [-1, 1]))
    scores, boxes, points = [], [], []
    for s in STRIDES:
        gain, bias = (20.0, -10.0) if s == FIND_STRIDE else (0.0, -10.0)
        nodes += [
            helper.make_node("AveragePool", ["input.1"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s],
                             name=f"pool{s}"),
            helper.make_node("Slice", [f"pool{s}", "ch_start", "ch_end", "ch_axis"], [f"ch{s}"], name=f"ch{s}"),
            helper.make_node("Mul", [f"ch{s}", const(f"gain{s}", np.array([gain]))], [f"scaled{s}"], name=f"g{s}"),
            helper.make_node("Add", [f"scaled{s}", const(f"bias{s}", np.array([bias]))], [f"logit{s}"],
                             name=f"b{s}"),
            helper.make_node("Sigmoid", [f"logit{s}"], [f"cell{s}"], name=f"sig{s}"),
            # (1, 1, h, w) -> one row per cell in row-major order, then each cell's two anchors
            helper.make_node("Reshape", [f"cell{s}", "flat"], [f"cells{s}"], name=f"rs{s}"),
            helper.make_node("Concat", [f"cells{s}", f"cells{s}"], [f"pairs{s}"], axis=1, name=f"cat{s}"),
            helper.make_node("Reshape", [f"pairs{s}", "flat"], [f"score_{s}"], name=f"score{s}"),
            helper.make_node("Mul", [f"score_{s}", const(f"zero{s}", np.array([0.0]))], [f"z{s}"], name=f"z{s}"),
            helper.make_node("Add", [f"z{s}", const(f"box{s}", np.full((1, 4), float(REACH)))], [f"bbox_{s}"],
                             name=f"bbox{s}"),
            helper.make_node("Add", [f"z{s}", const(f"kps{s}", np.tile([[-0.5, -0.5, 0.5, -0.5, 0.0, 0.0,
                                                                         -0.5, 0.5, 0.5, 0.5]], 1))],
                             [f"kps_{s}"], name=f"kps{s}"),
        ]
        scores.append(helper.make_tensor_value_info(f"score_{s}", TensorProto.FLOAT, ["n", 1]))
        boxes.append(helper.make_tensor_value_info(f"bbox_{s}", TensorProto.FLOAT, ["n", 4]))
        points.append(helper.make_tensor_value_info(f"kps_{s}", TensorProto.FLOAT, ["n", 10]))
    outputs = scores + boxes + points  # SCRFD's order: the scores, the boxes, the key points of each stride
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])
    return helper.make_graph(nodes, "tiny_scrfd", [image], outputs, inits)


def _landmarks():  # type: ignore[no-untyped-def]
    from onnx import TensorProto, helper

    angle = np.linspace(0, 2 * np.pi, N_POINTS, endpoint=False)
    circle = (RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)).reshape(1, -1).astype(np.float32)
    inits = [helper.make_tensor("circle", TensorProto.FLOAT, circle.shape, circle.ravel()),
             helper.make_tensor("nothing", TensorProto.FLOAT, [1], [0.0])]
    nodes = [
        helper.make_node("ReduceMean", ["data"], ["mean"], axes=[1, 2, 3], keepdims=0, name="mean"),
        helper.make_node("Mul", ["mean", "nothing"], ["none"], name="none"),
        helper.make_node("Reshape", ["none", "one"], ["none2"], name="none2"),
        helper.make_node("Add", ["none2", "circle"], ["fc1"], name="fc1"),
    ]
    inits.append(helper.make_tensor("one", TensorProto.INT64, [2], [1, 1]))
    image = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 2 * N_POINTS])
    return helper.make_graph(nodes, "tiny_2d106", [image], [out], inits)


def write_tiny_pack(folder: Path) -> Path:
    """``det_10g.onnx`` and ``2d106det.onnx`` (module doc) in ``folder`` (made), which is returned."""
    import onnx
    from onnx import helper

    folder.mkdir(parents=True, exist_ok=True)
    for name, graph in (("det_10g.onnx", _detector()), ("2d106det.onnx", _landmarks())):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(model)
        onnx.save(model, str(folder / name))
    return folder
