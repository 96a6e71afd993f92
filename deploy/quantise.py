#!/usr/bin/env python3
"""facegate's int8 models: static QDQ quantisation of the pinned fp32 models (ONNX Runtime).

Two steps, so that set-up is byte-reproducible and needs no evaluation data:

  deploy/quantise.py calibrate --role embedder|detector [--limit N]
      (a maintainer's step; needs ../shared/eval and target/release/facegate) runs
      `facegate eval calibration-inputs`, which streams the model inputs of LFW View 1 DevTrain
      images as facegate's own pipeline makes them (detect, landmarks, align, normalise) as raw
      f32 on a pipe; they are held in memory only, never written. ONNX Runtime's calibrator turns
      them into activation ranges, written to the entry's `calibration` file (ONNX Runtime's
      calibration cache: per-tensor lowest/highest, aggregate statistics, no face data), which is
      committed. It then builds the model from those ranges and prints its SHA-256 for the
      manifest.

  deploy/quantise.py build MANIFEST_ENTRY_JSON SOURCE DEST
      (what `deploy/fetch-assets.py` runs for a `quantize_qdq` transform, inside the pinned tool
      folder) converts the fp32 model to opset 13 (QDQ's per-channel axis), rewrites each PRelu as
      Relu/Mul/Mul/Add (exact: PRelu(x) = (1 - s) Relu(x) + s x; ONNX Runtime's PRelu kernel was
      measured 10x slower than the four), and quantises it with the committed ranges. Same inputs,
      same bytes: the manifest pins the result's SHA-256 and the runtime checks it at load.
"""

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def have_tools() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def reexec_with_tools(entry: dict) -> None:
    """Runs this script again with the entry's pinned packages (installed like fetch-assets does)."""
    spec = importlib.util.spec_from_file_location("fetch_assets", ROOT / "deploy" / "fetch-assets.py")
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    env = dict(os.environ, PYTHONPATH=str(fetch.tool_path(entry["transform"])), PYTHONNOUSERSITE="1")
    os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)


def int8_entry(role: str) -> dict:
    manifest = tomllib.loads((MODELS / "manifest.toml").read_text())
    for m in manifest.get("model", []):
        if m["role"] == role and m.get("precision") == "int8":
            return m
    sys.exit(f"quantise: models/manifest.toml has no int8 {role} entry")


def prepared(source: Path):
    """The fp32 graph as it is quantised: opset 13, PRelu spelled as Relu/Mul/Mul/Add."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper, version_converter

    model = onnx.load(str(source))
    if model.opset_import[0].version < 13:
        model = version_converter.convert_version(model, 13)
    g = model.graph
    init = {i.name: i for i in g.initializer}
    nodes = []
    for n in g.node:
        if n.op_type != "PRelu":
            nodes.append(n)
            continue
        x, slope = n.input
        if slope not in init:
            sys.exit(f"quantise: PRelu {n.name} has a slope that is not a constant")
        s = numpy_helper.to_array(init[slope]).astype(np.float32)
        b = n.name or n.output[0]
        g.initializer.append(numpy_helper.from_array((1.0 - s).astype(np.float32), f"{b}_one_minus_slope"))
        nodes += [
            helper.make_node("Relu", [x], [f"{b}_pos"], name=f"{b}_relu"),
            helper.make_node("Mul", [f"{b}_pos", f"{b}_one_minus_slope"], [f"{b}_pos_scaled"], name=f"{b}_mul_pos"),
            helper.make_node("Mul", [x, slope], [f"{b}_x_scaled"], name=f"{b}_mul_x"),
            helper.make_node("Add", [f"{b}_pos_scaled", f"{b}_x_scaled"], [n.output[0]], name=f"{b}_add"),
        ]
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def quantise(entry: dict, source: Path, dest: Path, cache: Path, reader=None, method=None) -> None:
    """ONNX Runtime's static QDQ quantisation with the entry's settings; ranges from `cache`
    (or, with `reader`, computed and written to it)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    t = entry["transform"]
    acts = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[t.get("activations", "uint8")]
    with tempfile.TemporaryDirectory(prefix="facegate-quantise.") as tmp:
        src = Path(tmp) / "prepared.onnx"
        onnx.save(prepared(source), str(src))
        quantize_static(
            str(src),
            str(dest),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=bool(t.get("per_channel", True)),
            activation_type=acts,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=t.get("exclude_nodes", []),
            op_types_to_quantize=t.get("op_types"),
            calibrate_method=method or CalibrationMethod[t.get("method", "MinMax")],
            calibration_cache_path=str(cache),
        )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(args) -> None:
    entry = json.loads(args.entry)
    cache = MODELS / entry["transform"]["calibration"]
    if not cache.is_file():
        sys.exit(f"quantise: the calibration ranges {cache} are missing (deploy/quantise.py calibrate makes them)")
    with tempfile.TemporaryDirectory(prefix="facegate-quantise.") as tmp:
        # A copy: quantize_static never writes a cache it read, but the committed file stays untouched.
        copy = Path(tmp) / "ranges.json"
        shutil.copyfile(cache, copy)
        quantise(entry, Path(args.source), Path(args.dest), copy)


def calibrate(args) -> None:
    entry = int8_entry(args.role)
    if not have_tools():
        reexec_with_tools(entry)
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader

    shape = entry["inputs"][0]["shape"]
    name = entry["inputs"][0]["name"]
    binary = ROOT / "target" / "release" / "facegate"
    start = time.monotonic()
    proc = subprocess.run(
        [str(binary), "eval", "calibration-inputs", "--role", args.role, "--limit", str(args.limit),
         "--pairs", args.pairs],
        stdout=subprocess.PIPE, check=True, cwd=ROOT,
    )
    data = np.frombuffer(proc.stdout, dtype="<f4")
    per = int(np.prod(shape))
    if data.size == 0 or data.size % per:
        sys.exit(f"quantise: facegate gave {data.size} values, not a multiple of {per}")
    inputs = data.reshape(-1, *shape)
    print(f"quantise: {len(inputs)} calibration inputs in {time.monotonic() - start:.1f} s", file=sys.stderr)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(inputs):
                return None
            self.i += 1
            return {name: inputs[self.i - 1]}

        def __len__(self):
            return len(inputs)

    cache = MODELS / entry["transform"]["calibration"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facegate-quantise.") as tmp:
        fresh = Path(tmp) / "ranges.json"
        out = Path(tmp) / "model.onnx"
        quantise(entry, MODELS / entry["transform"]["source"], out, fresh, reader=Reader())
        # Round-trip through the file, as set-up reads it.
        shutil.copyfile(fresh, cache)
        again = Path(tmp) / "again.onnx"
        quantise(entry, MODELS / entry["transform"]["source"], again, fresh)
        print(f"quantise: wrote {cache.relative_to(ROOT)}; model sha256 {sha256(again)} "
              f"(from the calibration run: {sha256(out)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="activation ranges from LFW DevTrain through facegate's pipeline")
    c.add_argument("--role", choices=["embedder", "detector"], required=True)
    c.add_argument("--limit", type=int, default=300)
    c.add_argument("--pairs", default=str(ROOT.parent / "shared" / "eval" / "lfw" / "pairsDevTrain.txt"))
    b = sub.add_parser("build", help="the int8 model from the committed ranges (fetch-assets runs this)")
    b.add_argument("entry")
    b.add_argument("source")
    b.add_argument("dest")
    args = ap.parse_args()
    {"calibrate": calibrate, "build": build}[args.cmd](args)


if __name__ == "__main__":
    main()
