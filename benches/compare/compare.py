#!/usr/bin/env python3
"""facegate against its peers on the same images in one run, with the ratios.

    cargo build --release -p facegate
    benches/compare/setup-peers.sh           # the pinned peers' venv (idempotent)
    python3 benches/compare/compare.py [--images 400] [--rounds 3] [--pairs 100] [--markdown] [--json FILE]
    python3 benches/compare/compare.py --aarch64 --images 10 --rounds 1 --pairs 0   # under qemu-user

Runs, each a whole process over the same N LFW images (every image measured once after a
warm-up on the first few), interleaved round by round in a rotating order so that a change in
the machine's load falls on all of them alike:

  facegate    `facegate bench pipeline DIR --json`, flip TTA off and on (liveness off)
  reference   `peers.py reference`: the same models in numpy + onnxruntime + Pillow, flip off, on
  dlib        `peers.py face-recognition`: ageitgey/face_recognition, HOG + ResNet encoding
  (ref-off-1t, only with --only: the reference on one intra-op thread per session)

and prints, as medians over the rounds: the per-image pipeline median (decode excluded) and
decode median of each, the whole process's wall and CPU time, the ratios to facegate, and
facegate's per-stage medians with the share of ONNX inference. Then the agreement check that
makes the reference "the same models": on `--pairs` LFW View 2 pairs, `facegate compare`'s
cosine against the reference's, and whether both decide the same at facegate's threshold.

Nothing of a face is printed or written: timings, counts and cosine scores only. Scratch (the
list of images and a folder of links to them) goes under ~/.cache/facegate/compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facegate"


def median(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def fail(msg):
    sys.exit(f"compare: {msg}")


def pick_images(lfw: Path, n: int) -> list[Path]:
    """N images spread evenly over LFW in name order (the same N on every machine)."""
    images = sorted((lfw / "images").glob("*/*.jpg"))
    if len(images) < n:
        fail(f"{lfw}/images holds {len(images)} images, fewer than --images {n}")
    return [images[i * len(images) // n] for i in range(n)]


def scratch(images: list[Path]) -> tuple[Path, Path]:
    """The list file and a folder of links, in the same order (facegate reads name order)."""
    d = CACHE / "compare" / f"lfw-{len(images)}"
    links = d / "images"
    links.mkdir(parents=True, exist_ok=True)
    for old in links.iterdir():
        old.unlink()
    names = []
    for i, p in enumerate(images):
        link = links / f"{i:05d}_{p.name}"
        link.symlink_to(p.resolve())
        names.append(str(link))
    lst = d / "images.txt"
    lst.write_text("\n".join(names) + "\n")
    return lst, links


def config_with_flip(flip: bool, tmp: Path) -> Path:
    base = (REPO / "configs" / "facegate.toml").read_text()
    # `true`, `false` or `"auto"` (which resolves by the operating point): always explicit here.
    text, n = re.subn(r"(?m)^flip_tta = .*$", f"flip_tta = {str(flip).lower()}", base)
    if n != 1:
        fail("configs/facegate.toml: expected one `flip_tta = ...` line")
    path = tmp / f"facegate-flip-{'on' if flip else 'off'}.toml"
    path.write_text(text)
    return path


def timed(cmd: list[str], env=None) -> tuple[dict, float, float]:
    """Runs `cmd` to its end: its last stdout line as JSON, wall seconds, CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        fail(f"{' '.join(cmd[:3])} ... failed ({p.returncode}):\n{p.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(p.stdout.strip().splitlines()[-1]), wall, cpu


def load():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def lfw_pairs(path: Path, n: int):
    """The first n/20 same and n/20 different pairs of each of the 10 folds."""
    lines = path.read_text().splitlines()
    folds, per = (int(x) for x in lines[0].split()[:2])
    k = max(1, n // (2 * folds))
    out = []
    body = lines[1:]
    for f in range(folds):
        block = body[f * 2 * per : (f + 1) * 2 * per]
        out += block[:k] + block[per : per + k]
    return out


def agreement(args, fg: Path, py: Path, lfw: Path, tmp: Path, flip_on: Path) -> dict:
    pairs = lfw_pairs(lfw / "pairs.txt", args.pairs)
    plist = tmp / "pairs.txt"
    plist.write_text(f"{len(pairs)}\n" + "\n".join(pairs) + "\n")
    ref, _, _ = timed(
        [str(py), str(HERE / "peers.py"), "reference-pairs", "--pairs", str(plist),
         "--images", str(lfw / "images"), "--flip"]
    )
    img = lambda name, i: str(lfw / "images" / name / f"{name}_{int(i):04d}.jpg")  # noqa: E731
    rows = []
    for line, r in zip(pairs, ref["pairs"]):
        f = line.split()
        a, b = (img(f[0], f[1]), img(f[0], f[2])) if len(f) == 3 else (img(f[0], f[1]), img(f[2], f[3]))
        p = subprocess.run([str(fg), "--config", str(flip_on), "compare", a, b, "--json"],
                           cwd=REPO, capture_output=True, text=True)
        if p.returncode != 0:
            rows.append({"facegate": None, "reference": r["similarity"], "looks": r["looks"]})
            continue
        c = json.loads(p.stdout)
        rows.append(
            {"facegate": c["similarity"], "threshold": c["threshold"], "fmr": c.get("fmr"),
             "reference": r["similarity"], "looks": r["looks"], "same": r["same"]}
        )
    both = [x for x in rows if x["facegate"] is not None and x["reference"] is not None]
    diffs = [abs(x["facegate"] - x["reference"]) for x in both]
    agree = sum((x["facegate"] >= x["threshold"]) == (x["reference"] >= x["threshold"]) for x in both)
    return {
        "pairs": len(rows),
        "compared": len(both),
        "reference_needs_fallback": sum("fallback" in x["looks"] for x in rows),
        "facegate_failed": sum(x["facegate"] is None for x in rows),
        "median_abs_diff": median(diffs),
        "max_abs_diff": max(diffs) if diffs else None,
        "same_decisions": agree,
        "threshold": both[0]["threshold"] if both else None,
        "fmr": both[0]["fmr"] if both else None,
    }


def markdown(summary, runs, label, base, images):
    """The README's "Side by side" tables from this run."""
    print(f"\n| run ({images} images) | per image, detect to last embedding | decode | whole process: wall | CPU | faces "
          "| vs facegate (same flip): per image / wall / CPU |\n|---|---|---|---|---|---|---|")
    for k in runs:
        s, b = summary[k], summary.get(base[k])
        ratio = ""
        if b and k != base[k]:
            ratio = " / ".join(f"{s[m] / b[m]:.2f}x" for m in ("per_image_ms", "wall_s", "cpu_s"))
        print(f"| {label[k]} | {s['per_image_ms']:.1f} ms | {s['decode_ms']:.2f} ms | {s['wall_s']:.1f} s "
              f"| {s['cpu_s']:.1f} s | {s['faces']} | {ratio} |")
    cols = [k for k in runs if k.startswith(("fg", "ref"))]
    rows = [("detect", "detect", "detect"), ("landmarks", "landmarks_per_face", "landmarks"),
            ("align", "align_per_face", "align"), ("quality", "quality_per_face", None),
            ("embed", "embed_per_face", "embed"), ("whole pipeline", "pipeline_per_frame", "pipeline")]
    print("\n| stage | " + " | ".join(label[k] for k in cols) + " |\n|---|" + "---|" * len(cols))
    for name, fg_key, ref_key in rows:
        cells = []
        for k in cols:
            key = fg_key if k.startswith("fg") else ref_key
            v = summary[k]["stages_p50_ms"].get(key) if key else None
            cells.append("(none)" if v is None else f"{v:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    share = []
    for k in cols:
        o = summary[k]["overhead_pct"]
        share.append(f"{100.0 / (1.0 + o / 100.0):.1f} % (overhead {o:.1f} % of inference)")
    print("| ONNX Runtime's share | " + " | ".join(share) + " |")


def main():
    ap = argparse.ArgumentParser(description="facegate against its peers on the same images")
    ap.add_argument("--images", type=int, default=400, help="LFW images per run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians over them)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=100, help="LFW pairs for the agreement check (0: none)")
    ap.add_argument("--lfw", type=Path, default=Path(os.environ.get("FACEGATE_EVAL_DIR", REPO.parent / "shared" / "eval")) / "lfw")
    ap.add_argument("--facegate", type=Path, default=REPO / "target" / "release" / "facegate")
    ap.add_argument("--peers", type=Path, default=Path(os.environ.get("FACEGATE_PEERS", CACHE / "peers")))
    ap.add_argument("--aarch64", action="store_true",
                    help="facegate's aarch64 build under qemu-user (deploy/cross-aarch64.sh run), facegate runs only")
    ap.add_argument("--only", default="", help="comma list of runs: fg-off,fg-on,ref-off,ref-on,dlib (the default), ref-off-1t")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--markdown", action="store_true", help="also print the README's two tables")
    args = ap.parse_args()

    py = args.peers / "bin" / "python"
    if not py.exists():
        fail(f"no peers venv at {args.peers}: run benches/compare/setup-peers.sh")
    if not args.aarch64 and not args.facegate.exists():
        fail(f"{args.facegate} is missing: cargo build --release -p facegate")
    if not (args.lfw / "images").is_dir():
        fail(f"{args.lfw}/images is missing (the LFW evaluation data, see ../shared/eval/README.md)")

    images = pick_images(args.lfw, args.images)
    lst, links = scratch(images)
    tmp = Path(tempfile.mkdtemp(prefix="facegate-compare-"))
    cfg = {False: config_with_flip(False, tmp), True: config_with_flip(True, tmp)}
    n, w = str(args.images), str(args.warmup)
    fg = [str(REPO / "deploy" / "cross-aarch64.sh"), "run"] if args.aarch64 else [str(args.facegate)]
    runs = {
        "fg-off": fg + ["--config", str(cfg[False]), "bench", "pipeline", str(links), "--frames", n, "--warmup", w, "--json"],
        "fg-on": fg + ["--config", str(cfg[True]), "bench", "pipeline", str(links), "--frames", n, "--warmup", w, "--json"],
        "ref-off": [str(py), str(HERE / "peers.py"), "reference", "--list", str(lst), "--warmup", w],
        "ref-on": [str(py), str(HERE / "peers.py"), "reference", "--list", str(lst), "--warmup", w, "--flip"],
        "dlib": [str(py), str(HERE / "peers.py"), "face-recognition", "--list", str(lst), "--warmup", w],
        # Diagnostic, only with --only: the reference on one intra-op thread per session.
        "ref-off-1t": [str(py), str(HERE / "peers.py"), "reference", "--list", str(lst), "--warmup", w, "--threads", "1"],
    }
    keep = (args.only or ("fg-off" if args.aarch64 else "fg-off,fg-on,ref-off,ref-on,dlib")).split(",")
    unknown = [k for k in keep if k not in runs]
    if unknown:
        fail(f"--only: unknown runs {unknown} (known: {', '.join(runs)})")
    runs = {k: v for k, v in runs.items() if k in keep}
    env = dict(os.environ, RUST_LOG="error")
    load0 = load()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res = {k: [] for k in runs}
    names = list(runs)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            out, wall, cpu = timed(runs[k], env)
            res[k].append({"out": out, "wall_s": wall, "cpu_s": cpu})
            print(f"round {r + 1}/{args.rounds} {k:<8} wall {wall:6.1f} s  cpu {cpu:6.1f} s", file=sys.stderr)
    load1 = load()

    def per_image(k):
        key = "pipeline_per_frame" if k.startswith("fg") else "pipeline"
        return median(x["out"]["stages"][key]["p50_ms"] for x in res[k])

    def decode(k):
        return median(x["out"]["stages"]["decode"]["p50_ms"] for x in res[k])

    summary = {}
    for k in runs:
        summary[k] = {
            "per_image_ms": per_image(k),
            "decode_ms": decode(k),
            "wall_s": median(x["wall_s"] for x in res[k]),
            "cpu_s": median(x["cpu_s"] for x in res[k]),
            "faces": res[k][0]["out"]["faces"],
        }
    for k in [k for k in runs if k.startswith("fg")]:
        st = {}
        for s in res[k][0]["out"]["stages"]:
            st[s] = median(x["out"]["stages"][s]["p50_ms"] for x in res[k])
        summary[k]["stages_p50_ms"] = st
        summary[k]["onnx_share_pct"] = median(
            100.0 * x["out"]["inference_ms_total"] / x["out"]["pipeline_ms_total"] for x in res[k]
        )
        summary[k]["overhead_pct"] = median(x["out"]["overhead_pct"] for x in res[k])
    for k in [k for k in runs if k.startswith("ref")]:
        summary[k]["stages_p50_ms"] = {
            s: median(x["out"]["stages"][s]["p50_ms"] for x in res[k]) for s in res[k][0]["out"]["stages"]
        }
        summary[k]["overhead_pct"] = median(x["out"]["overhead_pct"] for x in res[k])
        summary[k]["intra_threads"] = res[k][0]["out"]["intra_threads"]

    label = {"fg-off": "facegate, flip off", "fg-on": "facegate, flip on", "ref-off": "Python reference, flip off",
             "ref-off-1t": "Python reference, flip off, 1 thread",
             "ref-on": "Python reference, flip on", "dlib": "face_recognition (dlib HOG + ResNet)"}
    base = {"fg-off": "fg-off", "ref-off": "fg-off", "ref-off-1t": "fg-off", "dlib": "fg-off", "fg-on": "fg-on", "ref-on": "fg-on"}
    where = "aarch64 build under qemu-user (emulated, not a board) on " if args.aarch64 else ""
    print(f"\n{args.images} LFW images per run, {args.rounds} interleaved rounds, medians over rounds; "
          f"{where}{platform.machine()}, {os.cpu_count()} cores; load {load0[0]:.2f} at start, {load1[0]:.2f} at end; {started}")
    print(f"{'':<38} {'per image':>10} {'decode':>8} {'wall':>8} {'CPU':>8} {'faces':>6}   ratios to facegate (same flip): per image, wall, CPU")
    for k in runs:
        s = summary[k]
        b = summary.get(base[k])
        ratio = ""
        if b and k != base[k]:
            ratio = f"   {s['per_image_ms'] / b['per_image_ms']:.2f}x  {s['wall_s'] / b['wall_s']:.2f}x  {s['cpu_s'] / b['cpu_s']:.2f}x"
        print(f"{label[k]:<38} {s['per_image_ms']:>7.2f} ms {s['decode_ms']:>5.2f} ms {s['wall_s']:>6.1f} s {s['cpu_s']:>6.1f} s {s['faces']:>6}{ratio}")
    for k in [k for k in runs if k.startswith("fg")]:
        s = summary[k]
        st = s["stages_p50_ms"]
        order = ["decode", "detect", "landmarks_per_face", "align_per_face", "quality_per_face",
                 "embed_per_face", "pipeline_per_frame", "inference_per_frame"]
        print(f"{label[k]}: stages p50 " + ", ".join(f"{n} {st[n]:.3f}" for n in order if st.get(n) is not None)
              + f" ms; ONNX {s['onnx_share_pct']:.1f} % of the pipeline (overhead {s['overhead_pct']:.1f} % of inference)")
    for k in [k for k in runs if k.startswith("ref")]:
        s = summary[k]
        print(f"{label[k]} ({s['intra_threads']} intra-op threads per session): stages p50 "
              + ", ".join(f"{n} {v:.3f}" for n, v in s["stages_p50_ms"].items()) + f" ms; overhead {s['overhead_pct']:.1f} % of inference")

    agree = None
    if args.pairs > 0 and not args.aarch64:
        agree = agreement(args, args.facegate, py, args.lfw, tmp, cfg[True])
        print(f"agreement on {agree['pairs']} LFW View 2 pairs (flip on): {agree['compared']} compared "
              f"({agree['reference_needs_fallback']} need facegate's fallback detector, which the reference lacks; "
              f"{agree['facegate_failed']} refused by facegate); |cosine facegate - reference| median "
              f"{agree['median_abs_diff']:.4f}, max {agree['max_abs_diff']:.4f}; same decision at the threshold "
              f"{agree['threshold']:.4f} (FMR {agree['fmr']}) on {agree['same_decisions']} of {agree['compared']}")
    if args.markdown:
        markdown(summary, runs, label, base, args.images)
    if args.json:
        args.json.write_text(json.dumps({"started": started, "machine": platform.machine(), "cores": os.cpu_count(),
                                         "load_start": load0, "load_end": load1, "images": args.images,
                                         "rounds": args.rounds, "emulated": args.aarch64, "summary": summary,
                                         "agreement": agree}, indent=1) + "\n")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
