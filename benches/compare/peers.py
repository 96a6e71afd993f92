"""The peers of `compare.py`, one process per run, each printing one JSON line of timings.

    peers.py reference --list FILE [--flip] [--warmup N] [--threads N]
    peers.py face-recognition --list FILE [--warmup N]
    peers.py reference-pairs --pairs FILE --images DIR [--threads N]

`--list` names one image per line. The first `--warmup` images are run once more before the
measured pass over all of them (as `facegate bench pipeline --warmup` does), so every image is
measured once. Timings are milliseconds: `decode` (file to RGB array), the pipeline per image
(detect to the last embedding, decode excluded, as facegate's `pipeline_per_frame`) and its
stages. `reference-pairs` prints the cosine similarity of each LFW-format pair under the
reference (scores only: no image, embedding or landmark is ever printed or written).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def median(v):
    v = sorted(v)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def quantile(v, q):
    v = sorted(v)
    if not v:
        return None
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def read_list(path):
    images = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not images:
        sys.exit(f"{path}: no images listed")
    return images


def summary(rows, stages):
    """p50/p95 per stage; per-face stages divided by the faces of their image."""
    out = {}
    for name, per_face in stages:
        if per_face:
            v = [r[name] / r["faces"] for r in rows if r["faces"] > 0]
        else:
            v = [r[name] for r in rows]
        out[name] = {"p50_ms": median(v), "p95_ms": quantile(v, 0.95)}
    return out


def run_reference(args):
    import onnxruntime

    from reference import Reference, decode

    ref = Reference(REPO, flip=args.flip, intra_threads=args.threads)
    images = read_list(args.list)
    rows = []
    for i, path in enumerate(images[: args.warmup] + images):
        t0 = time.perf_counter()
        img = decode(path)
        dec = (time.perf_counter() - t0) * 1e3
        faces, t = ref.analyse(img)
        del faces, img  # nothing of the face leaves this loop
        if i >= args.warmup:
            rows.append(
                {
                    "decode": dec,
                    "detect": t.detect,
                    "landmarks": t.landmarks,
                    "align": t.align,
                    "embed": t.embed,
                    "pipeline": t.total(),
                    "inference": t.inference,
                    "faces": t.faces,
                }
            )
    pipeline_sum = sum(r["pipeline"] for r in rows)
    inference_sum = sum(r["inference"] for r in rows)
    print(
        json.dumps(
            {
                "peer": "reference",
                "onnxruntime": onnxruntime.__version__,
                "intra_threads": ref.intra_threads,
                "flip_tta": args.flip,
                "images": len(rows),
                "faces": sum(r["faces"] for r in rows),
                "stages": summary(
                    rows,
                    [
                        ("decode", False),
                        ("detect", False),
                        ("landmarks", True),
                        ("align", True),
                        ("embed", True),
                        ("pipeline", False),
                        ("inference", False),
                    ],
                ),
                "pipeline_ms_total": pipeline_sum,
                "inference_ms_total": inference_sum,
                "overhead_pct": 100.0 * (pipeline_sum - inference_sum) / max(inference_sum, 1e-9),
            }
        )
    )


def run_face_recognition(args):
    from importlib.metadata import version

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
        import face_recognition

    images = read_list(args.list)
    rows = []
    for i, path in enumerate(images[: args.warmup] + images):
        t0 = time.perf_counter()
        img = face_recognition.load_image_file(path)
        t1 = time.perf_counter()
        boxes = face_recognition.face_locations(img, model="hog")
        t2 = time.perf_counter()
        enc = face_recognition.face_encodings(img, known_face_locations=boxes)
        t3 = time.perf_counter()
        n = len(enc)
        del enc, img
        if i >= args.warmup:
            rows.append(
                {
                    "decode": (t1 - t0) * 1e3,
                    "detect": (t2 - t1) * 1e3,
                    "encode": (t3 - t2) * 1e3,
                    "pipeline": (t3 - t1) * 1e3,
                    "faces": n,
                }
            )
    print(
        json.dumps(
            {
                "peer": "face_recognition",
                "face_recognition": version("face-recognition"),
                "dlib": version("dlib-bin"),
                "images": len(rows),
                "faces": sum(r["faces"] for r in rows),
                "stages": summary(
                    rows,
                    [("decode", False), ("detect", False), ("encode", True), ("pipeline", False)],
                ),
            }
        )
    )


def read_pairs(path):
    """LFW pair lists: a header line, then `name i j` or `name_a i name_b j`."""
    pairs = []
    for line in Path(path).read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            pairs.append(((f[0], int(f[1])), (f[0], int(f[2])), True))
        elif len(f) == 4:
            pairs.append(((f[0], int(f[1])), (f[2], int(f[3])), False))
    return pairs


def run_reference_pairs(args):
    from reference import Reference, decode

    ref = Reference(REPO, flip=args.flip, intra_threads=args.threads)
    images = Path(args.images)
    cache = {}

    def template(who):
        if who not in cache:
            name, i = who
            emb, look = ref.embed_photo(decode(images / name / f"{name}_{i:04d}.jpg"))
            cache[who] = (emb, look)
        return cache[who]

    out = []
    for a, b, same in read_pairs(args.pairs):
        (ea, la), (eb, lb) = template(a), template(b)
        sim = float(ea @ eb) if ea is not None and eb is not None else None
        out.append({"same": same, "similarity": sim, "looks": [la, lb]})
    cache.clear()
    print(json.dumps({"peer": "reference", "flip_tta": args.flip, "pairs": out}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--list", required=True)
    r.add_argument("--flip", action="store_true")
    r.add_argument("--warmup", type=int, default=5)
    r.add_argument("--threads", type=int, default=0)
    f = sub.add_parser("face-recognition")
    f.add_argument("--list", required=True)
    f.add_argument("--warmup", type=int, default=5)
    q = sub.add_parser("reference-pairs")
    q.add_argument("--pairs", required=True)
    q.add_argument("--images", required=True)
    q.add_argument("--flip", action="store_true")
    q.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    {
        "reference": run_reference,
        "face-recognition": run_face_recognition,
        "reference-pairs": run_reference_pairs,
    }[a.cmd](a)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
