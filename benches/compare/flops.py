"""Multiply-accumulates of facegate's models, counted from their ONNX graphs.

    python benches/compare/flops.py            # (the peers' venv has onnx; see setup-peers.sh)

For each model in `models/manifest.toml`: the MACs of its Conv, ConvTranspose, Gemm and MatMul
nodes at the manifest's input shape (after ONNX shape inference), which is where nearly all of
a CNN's work is; element-wise nodes are left out. One JSON line per model. docs/aarch64.md
scales published board figures by these counts.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import onnx
from onnx import numpy_helper, shape_inference

REPO = Path(__file__).resolve().parents[2]


def dims(vi):
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def count(path: Path) -> dict:
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    shapes = {vi.name: dims(vi) for vi in list(g.value_info) + list(g.input) + list(g.output)}
    inits = {t.name: list(numpy_helper.to_array(t).shape) for t in g.initializer}
    shapes.update(inits)
    by_op: dict[str, int] = {}
    params = sum(math.prod(s) for s in inits.values())
    for n in g.node:
        macs = 0
        if n.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(n.input[1])
            out = shapes.get(n.output[0])
            if w and out and all(out):
                if n.op_type == "Conv":
                    macs = math.prod(out) * math.prod(w[1:])
                else:  # weight [Cin, Cout/g, kh, kw]; every input pixel feeds kh*kw*Cout/g
                    x = shapes.get(n.input[0])
                    macs = math.prod(x) * math.prod(w[1:]) if x else 0
        elif n.op_type in ("Gemm", "MatMul"):
            a, b = shapes.get(n.input[0]), shapes.get(n.input[1])
            out = shapes.get(n.output[0])
            if a and b and out and all(out):
                k = a[-1] if not (n.op_type == "Gemm" and any(
                    at.name == "transA" and at.i for at in n.attribute)) else a[0]
                macs = math.prod(out) * k
        if macs:
            by_op[n.op_type] = by_op.get(n.op_type, 0) + macs
    convs = [n for n in g.node if n.op_type == "Conv"]
    depthwise = sum(
        1 for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)
    )
    return {
        "gmacs": sum(by_op.values()) / 1e9,
        "by_op_gmacs": {k: v / 1e9 for k, v in by_op.items()},
        "params_m": params / 1e6,
        "convs": len(convs),
        "grouped_convs": depthwise,
    }


def main():
    manifest = tomllib.loads((REPO / "models" / "manifest.toml").read_text())
    for m in manifest["model"]:
        path = REPO / "models" / m["dest"]
        row = {"role": m["role"], "name": m["name"], "input": m["inputs"][0]["shape"]}
        row.update(count(path))
        print(json.dumps(row))


if __name__ == "__main__":
    main()
