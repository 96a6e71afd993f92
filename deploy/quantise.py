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
      committed. With `equalise` in the transform it first measures, on the same inputs, each
      equalisable channel's largest |value| in the fp32 model and writes them to the
      `equalise` file (also committed, also aggregate). It then builds the model from
      those files and prints its SHA-256 for the manifest.

  deploy/quantise.py build MANIFEST_ENTRY_JSON SOURCE DEST
      (what `deploy/fetch-assets.py` runs for a `quantize_qdq` transform, inside the pinned tool
      folder) converts the fp32 model to opset 13 (QDQ's per-channel axis), rewrites each PRelu as
      Relu/Mul/Mul/Add (exact: PRelu(x) = (1 - s) Relu(x) + s x; ONNX Runtime's PRelu kernel was
      measured 10x slower than the four) or, left in fp32 with slopes at most 1, as
      Max(x, s x), and quantises it with the committed ranges. Same inputs,
      same bytes: the manifest pins the result's SHA-256 and the runtime checks it at load.

The transform's settings (models/manifest.toml): `method` (MinMax, Percentile, Entropy) and
`activations` (uint8, int8); `per_channel` (weights); `exclude_nodes` (left in
fp32); `prelu = "float"` (the nodes of each PRelu stay fp32 between the convolutions'
int8, which saves three requantisations per PRelu); `equalise` (a JSON file with the measured
per-channel maxima and the exponent `alpha` and `cap`: cross-layer equalisation of each Conv -> PRelu -> depthwise Conv -> [PRelu] -> Conv run:
exact in fp32, it evens out the channels' ranges before their per-tensor quantisation).
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


def load13(source: Path):
    """The fp32 graph at opset 13 (QDQ's per-channel axis)."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(source))
    if model.opset_import[0].version < 13:
        model = version_converter.convert_version(model, 13)
    return model


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def chains(model) -> list:
    """The equalisable runs: Conv P -> PRelu A -> depthwise Conv D -> [PRelu B] -> Conv K (group
    1), each tensor with one consumer. Scaling channel c of P's output by s_c (P's weights and
    bias), D's bias by s_c and K's input channel c by 1/s_c changes nothing in exact arithmetic:
    D works channel by channel and PRelu(s x) = s PRelu(x) for s > 0."""
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    cons: dict = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    out = []
    for d in g.node:
        if d.op_type != "Conv" or _group(d) <= 1:
            continue
        a = prod.get(d.input[0])
        if a is None or a.op_type != "PRelu" or len(cons[a.output[0]]) != 1:
            continue
        p = prod.get(a.input[0])
        if p is None or p.op_type != "Conv" or len(cons[p.output[0]]) != 1:
            continue
        nxt = cons.get(d.output[0], [])
        b = None
        if len(nxt) == 1 and nxt[0].op_type == "PRelu":
            b = nxt[0]
            nxt = cons.get(b.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Conv" or _group(nxt[0]) != 1:
            continue
        out.append((p, a, d, b, nxt[0]))
    return out


def chain_tensors(chain) -> list:
    p, a, d, b, _ = chain
    return [p.output[0], a.output[0], d.output[0]] + ([b.output[0]] if b is not None else [])


def equalise(model, eq: dict, maxima: dict) -> None:
    """Cross-layer equalisation from measured per-channel maxima |x| (exact in fp32): each
    chain's channels are scaled by s_c = min((M / m_c)^alpha, cap), m_c the channel's largest
    |value| over the chain's tensors and M the largest m_c, so that a per-tensor activation range
    no longer spends its 256 levels on a few wide channels. Dead channels (m_c ~ 0) keep s = 1."""
    import numpy as np
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    users: dict = {}
    for n in model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1

    def scale(name, factor):
        if users.get(name, 0) != 1:
            sys.exit(f"quantise: equalise: initializer {name} is shared; refusing to rescale it")
        v = numpy_helper.to_array(init[name]).astype(np.float32) * factor
        init[name].CopyFrom(numpy_helper.from_array(v.astype(np.float32), name))

    alpha, cap = float(eq["alpha"]), float(eq["cap"])
    found = chains(model)
    if not found:
        sys.exit("quantise: equalise: the model has no Conv-PRelu-depthwise Conv-Conv run")
    for chain in found:
        p, _, d, _, k = chain
        names = chain_tensors(chain)
        missing = [t for t in names if t not in maxima]
        if missing:
            sys.exit(f"quantise: equalise: the channel maxima have no {missing[0]} (re-run calibrate)")
        m = np.max([np.asarray(maxima[t], dtype=np.float32) for t in names], axis=0)
        s = np.ones_like(m)
        live = m > 1e-6 * m.max()
        s[live] = np.minimum((m.max() / m[live]) ** alpha, cap)
        scale(p.input[1], s[:, None, None, None])
        if len(p.input) > 2:
            scale(p.input[2], s)
        if len(d.input) > 2:
            scale(d.input[2], s)
        scale(k.input[1], (1.0 / s)[None, :, None, None])


def write_equalise(path: Path, doc: dict) -> None:
    """The equalisation file: its settings, then one line per tensor (floats round-trip exactly)."""
    head = {k: v for k, v in sorted(doc.items()) if k != "maxima"}
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(doc["maxima"].items()))
    path.write_text(json.dumps(head, indent=1)[:-2] + ',\n "maxima": {\n' + rows + "\n }\n}\n")


def prepared(source: Path, t: dict | None = None, maxima: dict | None = None):
    """The fp32 graph as it is quantised, and the names of the nodes its PRelus became: opset
    13, equalised if the transform says so, each PRelu spelled as Relu/Mul/Mul/Add, or, with
    `prelu = "float"` and every slope at most 1, as Max(x, s x) (exact for s <= 1, negative
    slopes included: two fp32 nodes instead of four; 3.91 -> 3.46 ms a face on one thread in ONNX
    Runtime's Python API, interleaved)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = load13(source)
    t = t or {}
    if t.get("equalise"):
        doc = json.loads((MODELS / t["equalise"]).read_text())
        equalise(model, doc, maxima if maxima is not None else doc["maxima"])
    g = model.graph
    init = {i.name: i for i in g.initializer}
    nodes, names = [], []
    for n in g.node:
        if n.op_type != "PRelu":
            nodes.append(n)
            continue
        x, slope = n.input
        if slope not in init:
            sys.exit(f"quantise: PRelu {n.name} has a slope that is not a constant")
        s = numpy_helper.to_array(init[slope]).astype(np.float32)
        b = n.name or n.output[0]
        if t.get("prelu") == "float" and float(s.max()) <= 1.0:
            made = [
                helper.make_node("Mul", [x, slope], [f"{b}_x_scaled"], name=f"{b}_mul_x"),
                helper.make_node("Max", [x, f"{b}_x_scaled"], [n.output[0]], name=f"{b}_max"),
            ]
        else:
            g.initializer.append(numpy_helper.from_array((1.0 - s).astype(np.float32), f"{b}_one_minus_slope"))
            made = [
                helper.make_node("Relu", [x], [f"{b}_pos"], name=f"{b}_relu"),
                helper.make_node("Mul", [f"{b}_pos", f"{b}_one_minus_slope"], [f"{b}_pos_scaled"], name=f"{b}_mul_pos"),
                helper.make_node("Mul", [x, slope], [f"{b}_x_scaled"], name=f"{b}_mul_x"),
                helper.make_node("Add", [f"{b}_pos_scaled", f"{b}_x_scaled"], [n.output[0]], name=f"{b}_add"),
            ]
        nodes += made
        names += [m.name for m in made]
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    return model, names


def quantise(entry: dict, source: Path, dest: Path, cache: Path, reader=None, maxima=None) -> None:
    """ONNX Runtime's static QDQ quantisation with the entry's settings; ranges from `cache`
    (or, with `reader`, computed and written to it)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    t = entry["transform"]
    acts = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[t.get("activations", "uint8")]
    prelu = t.get("prelu", "int8")
    if prelu not in ("int8", "float"):
        sys.exit(f"quantise: transform prelu = {prelu!r}: expected \"int8\" or \"float\"")
    extra = {}
    if reader is not None:
        # The histogram calibrators keep every output of a run in memory (about 60 MB a face
        # here): collect in chunks, merged into one histogram per tensor.
        extra["CalibStridedMinMax"] = reader.chunk
    with tempfile.TemporaryDirectory(prefix="facegate-quantise.") as tmp:
        src = Path(tmp) / "prepared.onnx"
        model, prelu_nodes = prepared(source, t, maxima)
        # PRelu kept in float between the convolutions' int8 (the four nodes it becomes would
        # add three requantisations each: measured in the README).
        exclude = list(t.get("exclude_nodes", [])) + (prelu_nodes if prelu == "float" else [])
        onnx.save(model, str(src))
        quantize_static(
            str(src),
            str(dest),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=bool(t.get("per_channel", True)),
            activation_type=acts,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            op_types_to_quantize=t.get("op_types"),
            calibrate_method=CalibrationMethod[t.get("method", "MinMax")],
            calibration_cache_path=str(cache),
            extra_options=extra,
        )


def channel_maxima(source: Path, inputs, name: str) -> dict:
    """Per-channel max |x| of each equalisable tensor of the fp32 model over the inputs."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    model = load13(source)
    names = [t for c in chains(model) for t in chain_tensors(c)]
    have = {o.name for o in model.graph.output}
    for t in names:
        if t not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    acc = {}
    for x in inputs:
        for k, v in zip(outs, sess.run(None, {name: x})):
            if k in names:
                m = np.abs(v[0]).reshape(v.shape[1], -1).max(axis=1)
                acc[k] = np.maximum(acc[k], m) if k in acc else m
    return {k: [float(x) for x in acc[k]] for k in names}


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


def model_inputs(entry: dict, args):
    """The model inputs of LFW images made by facegate's own pipeline, held in memory only."""
    import numpy as np

    shape = entry["inputs"][0]["shape"]
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
    print(f"quantise: {len(inputs)} model inputs in {time.monotonic() - start:.1f} s", file=sys.stderr)
    return inputs


def compare(args) -> None:
    """Cosine between the built int8 embedder's and the fp32 embedder's embedding of the same
    faces, without and with flip: aggregates only (mean, 1st percentile, worst)."""
    entry = int8_entry("embedder")
    if not have_tools():
        reexec_with_tools(entry)
    import numpy as np
    import onnxruntime as ort

    args.role = "embedder"
    inputs = model_inputs(entry, args)
    name = entry["inputs"][0]["name"]

    def embeddings(path: Path, flip: bool):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        out = []
        for x in inputs:
            e = sess.run(None, {name: x})[0][0]
            if flip:
                e = e + sess.run(None, {name: np.ascontiguousarray(x[..., ::-1])})[0][0]
            out.append(e / np.linalg.norm(e))
        return np.array(out)

    int8 = MODELS / entry["dest"]
    if sha256(int8) != entry["sha256"]:
        sys.exit(f"quantise: {int8} is not the manifest's build (run deploy/dev.sh setup)")
    for flip in (False, True):
        c = np.sum(embeddings(MODELS / entry["transform"]["source"], flip) * embeddings(int8, flip), axis=1)
        print(f"flip {'on ' if flip else 'off'}: {len(c)} faces, cosine int8 to fp32 mean {c.mean():.4f}, "
              f"1st percentile {np.percentile(c, 1):.4f}, worst {c.min():.4f}")


def calibrate(args) -> None:
    entry = int8_entry(args.role)
    if not have_tools():
        reexec_with_tools(entry)
    from onnxruntime.quantization import CalibrationDataReader

    name = entry["inputs"][0]["name"]
    inputs = model_inputs(entry, args)

    class Reader(CalibrationDataReader):
        # The largest chunk up to 50 that divides the count (CalibStridedMinMax needs one).
        chunk = next(c for c in range(min(50, len(inputs)), 0, -1) if len(inputs) % c == 0)

        def __init__(self):
            self.i, self.end = 0, len(inputs)

        def set_range(self, start_index, end_index):
            self.i, self.end = start_index, min(end_index, len(inputs))

        def get_next(self):
            if self.i >= self.end:
                return None
            self.i += 1
            return {name: inputs[self.i - 1]}

        def __len__(self):
            return len(inputs)

    t = entry["transform"]
    maxima = None
    if t.get("equalise"):
        # The exponent and cap are kept from the committed file (set by hand: README).
        path = MODELS / t["equalise"]
        doc = json.loads(path.read_text()) if path.is_file() else {}
        if "alpha" not in doc or "cap" not in doc:
            sys.exit(f"quantise: {path} must name the equalisation's alpha and cap")
        maxima = channel_maxima(MODELS / t["source"], inputs, name)
        doc.update(
            what="cross-layer equalisation of the int8 embedder: per-channel max |x| of the fp32 "
                 "model's equalised tensors over the calibration faces (aggregate statistics, no "
                 "face data), written by deploy/quantise.py calibrate; alpha and cap set by hand",
            faces=len(inputs),
            maxima=maxima,
        )
        write_equalise(path, doc)
    cache = MODELS / entry["transform"]["calibration"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facegate-quantise.") as tmp:
        fresh = Path(tmp) / "ranges.json"
        out = Path(tmp) / "model.onnx"
        quantise(entry, MODELS / entry["transform"]["source"], out, fresh, reader=Reader(), maxima=maxima)
        # Round-trip through the file, as set-up reads it.
        shutil.copyfile(fresh, cache)
        again = Path(tmp) / "again.onnx"
        # As set-up builds it: the maxima read back from the committed file.
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
    k = sub.add_parser("compare", help="cosine of the int8 to the fp32 embedding of LFW faces (aggregates)")
    k.add_argument("--limit", type=int, default=1000)
    k.add_argument("--pairs", default=str(ROOT.parent / "shared" / "eval" / "lfw" / "pairsDevTrain.txt"))
    b = sub.add_parser("build", help="the int8 model from the committed ranges (fetch-assets runs this)")
    b.add_argument("entry")
    b.add_argument("source")
    b.add_argument("dest")
    args = ap.parse_args()
    {"calibrate": calibrate, "compare": compare, "build": build}[args.cmd](args)


if __name__ == "__main__":
    main()
