"""A Python reference of facegate's vision pipeline: the same ONNX models, the same steps.

detector (UltraFace) -> landmarks (PFLD 68) -> five points -> similarity alignment to the ArcFace
112x112 template -> embedder (+ its mirror image when flip TTA is on), with numpy + onnxruntime
+ Pillow. Pre-processing (colour order, layout, mean, scale, input shapes, detector threshold
and NMS) is read from `models/manifest.toml`; the geometry follows `facegate-vision`:
`preprocess.rs` (OpenCV INTER_LINEAR resize with pixel centres at +0.5; the inverse-mapped
bilinear warp with a zero border), `crop.rs` (the landmark crop), `cues.rs` (the five points),
`align.rs` (Umeyama without reflection), `photo.rs` (the grey margin look for photos).

Not mirrored: facegate's quality stage (the reference computes no quality) and the CenterFace
fallback detector for ID photos (`embed_photo` says when a photo would need it).

ONNX Runtime settings, as facegate's `runtime.rs`: one session per model, graph optimisation
level ALL, sequential execution, 1 inter-op thread, `intra_threads` intra-op threads (facegate's
default 0 = one per core, and its sessions share one global pool; the Python API has one pool
per session, so each session here gets its own pool of that size), spinning off, memory pattern
on.

Nothing here prints, logs or stores an image, an embedding or a landmark: callers get arrays in
memory and the benches print timings and cosine scores only.
"""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ALIGNED = 112
MARGIN = 0.4  # photo.rs MARGIN
MARGIN_GREY = 128  # photo.rs MARGIN_GREY
LARGE_FACE = 0.5  # photo.rs LARGE_FACE


def decode(path: str | os.PathLike) -> np.ndarray:
    """An image file as an H x W x 3 uint8 RGB array."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass
class Prep:
    colour: str
    mean: float
    scale: float


@dataclass
class Timings:
    """Milliseconds per stage of one image, and the ONNX Runtime `run` calls among them."""

    detect: float = 0.0
    landmarks: float = 0.0
    align: float = 0.0
    embed: float = 0.0
    inference: float = 0.0
    faces: int = 0

    def total(self) -> float:
        return self.detect + self.landmarks + self.align + self.embed


@dataclass
class Face:
    box: np.ndarray  # x1, y1, x2, y2
    score: float
    embedding: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show face data
        return f"Face(score={self.score:.3f}, <redacted>)"


def _axis(dst: int, start: int, length: int):
    d = np.arange(dst, dtype=np.float32)
    ratio = np.float32(length) / np.float32(dst)
    s = np.clip((d + np.float32(0.5)) * ratio - np.float32(0.5), 0.0, np.float32(length - 1))
    i0 = s.astype(np.int64)
    i1 = np.minimum(i0 + 1, length - 1)
    return start + i0, start + i1, (s - i0).astype(np.float32)


def resize_planar(img: np.ndarray, rect, dst_w: int, dst_h: int, prep: Prep) -> np.ndarray:
    """`rect` (x, y, w, h) of `img` resized bilinearly to 1 x C x dst_h x dst_w, normalised."""
    x, y, w, h = rect
    x0, x1, fx = _axis(dst_w, x, w)
    y0, y1, fy = _axis(dst_h, y, h)
    f = img.astype(np.float32)
    r0, r1 = f[y0], f[y1]  # dst_h x W x 3
    fx3 = fx[None, :, None]
    top = r0[:, x0] + (r0[:, x1] - r0[:, x0]) * fx3
    bot = r1[:, x0] + (r1[:, x1] - r1[:, x0]) * fx3
    v = top + (bot - top) * fy[:, None, None]  # dst_h x dst_w x 3 (RGB)
    return _planes(v, prep)


def _planes(v: np.ndarray, prep: Prep) -> np.ndarray:
    if prep.colour == "grey":
        g = (
            np.float32(0.299) * v[..., 0]
            + np.float32(0.587) * v[..., 1]
            + np.float32(0.114) * v[..., 2]
        )
        planes = g[None]
    elif prep.colour == "bgr":
        planes = v[..., ::-1].transpose(2, 0, 1)
    else:
        planes = v.transpose(2, 0, 1)
    out = (planes - np.float32(prep.mean)) * np.float32(prep.scale)
    return np.ascontiguousarray(out[None], dtype=np.float32)


def crop_rect(width: int, height: int, box: np.ndarray, scale: float = 1.0):
    """crop.rs `crop_rect`: the box (integer corners) enlarged by `scale`, kept inside."""
    x, y = np.trunc(box[0]), np.trunc(box[1])
    bw = max(np.trunc(box[2]) - x, 1.0)
    bh = max(np.trunc(box[3]) - y, 1.0)
    fw, fh = float(width), float(height)
    s = max(min(scale, (fh - 1.0) / bh, (fw - 1.0) / bw), 0.0)
    nw, nh = bw * s, bh * s
    cx, cy = x + bw / 2.0, y + bh / 2.0
    l, t, r, b = cx - nw / 2.0, cy - nh / 2.0, cx + nw / 2.0, cy + nh / 2.0
    if l < 0.0:
        r -= l
        l = 0.0
    if t < 0.0:
        b -= t
        t = 0.0
    if r > fw - 1.0:
        l -= r - fw + 1.0
        r = fw - 1.0
    if b > fh - 1.0:
        t -= b - fh + 1.0
        b = fh - 1.0
    # PixelRect::clamped
    x0 = min(int(max(l, 0.0)), width - 1)
    y0 = min(int(max(t, 0.0)), height - 1)
    w = min(max(int(max(r - l, 1.0)), 1), width - x0)
    h = min(max(int(max(b - t, 1.0)), 1), height - y0)
    return x0, y0, w, h


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """align.rs `similarity`: 2 x 3 matrix mapping src points onto dst (least squares)."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    sxx = float((s * s).sum())
    if sxx < 1e-9:
        return None
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / sxx
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / sxx
    tx = md[0] - (a * ms[0] - b * ms[1])
    ty = md[1] - (b * ms[0] + a * ms[1])
    return np.array([[a, -b, tx], [b, a, ty]], dtype=np.float64)


def warp_planar(img: np.ndarray, to_crop: np.ndarray, size: int, prep: Prep) -> np.ndarray:
    """preprocess.rs `warp_to_planar`: output (u, v) samples the image at the inverse transform
    of (u, v), bilinearly, 0 outside the image (OpenCV's constant border)."""
    m = np.vstack([to_crop, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)[:2].astype(np.float32)
    u, v = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    sx = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    sy = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    x0f, y0f = np.floor(sx), np.floor(sy)
    fx, fy = (sx - x0f)[..., None], (sy - y0f)[..., None]
    h, w = img.shape[:2]
    # One pixel of zero border around the picture, so every tap is an index.
    padded = np.zeros((h + 2, w + 2, 3), dtype=np.float32)
    padded[1:-1, 1:-1] = img
    xi = np.clip(x0f.astype(np.int64) + 1, 0, w + 1)
    yi = np.clip(y0f.astype(np.int64) + 1, 0, h + 1)
    xj = np.clip(x0f.astype(np.int64) + 2, 0, w + 1)
    yj = np.clip(y0f.astype(np.int64) + 2, 0, h + 1)
    top = padded[yi, xi] * (1 - fx) + padded[yi, xj] * fx
    bot = padded[yj, xi] * (1 - fx) + padded[yj, xj] * fx
    val = top * (1 - fy) + bot * fy
    # Taps further out than the one-pixel border are 0 too.
    outside = (x0f < -1) | (y0f < -1) | (x0f >= w) | (y0f >= h)
    val[outside] = 0.0
    return _planes(val, prep)


def with_margin(img: np.ndarray, aspect: float):
    """photo.rs `with_margin`: the photo centred on a grey canvas; returns it and the offset."""
    fh, fw = img.shape[:2]
    cw, ch = fw * (1.0 + 2.0 * MARGIN), fh * (1.0 + 2.0 * MARGIN)
    if cw / ch < aspect:
        cw = ch * aspect
    else:
        ch = cw / aspect
    cw, ch = int(np.ceil(np.float32(cw))), int(np.ceil(np.float32(ch)))
    ox, oy = (cw - fw) // 2, (ch - fh) // 2
    canvas = np.full((ch, cw, 3), MARGIN_GREY, dtype=np.uint8)
    canvas[oy : oy + fh, ox : ox + fw] = img
    return canvas, (ox, oy)


class Reference:
    """The four steps with one ONNX Runtime session per model."""

    def __init__(self, repo: str | os.PathLike, flip: bool, intra_threads: int = 0):
        repo = Path(repo)
        manifest = tomllib.loads((repo / "models" / "manifest.toml").read_text())
        # The fp32 entry of each role: the manifest also lists an int8 embedder built at set-up
        # (`precision = "int8"`), which facegate only runs when its config asks for it.
        self.specs = {
            m["role"]: m for m in manifest["model"] if m.get("precision", "fp32") == "fp32"
        }
        threads = intra_threads or os.cpu_count() or 1
        self.intra_threads = threads
        self.flip = flip

        def session(role: str):
            spec = self.specs[role]
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.enable_mem_pattern = True
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.log_severity_level = 3
            path = repo / "models" / spec["dest"]
            s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            p = spec["preprocess"]
            return s, Prep(p["colour"], float(p["mean"]), float(p["scale"])), spec

        self.det, self.det_prep, det = session("detector")
        self.lmk, self.lmk_prep, lmk = session("landmarks")
        self.emb, self.emb_prep, emb = session("embedder")
        _, _, self.det_h, self.det_w = det["inputs"][0]["shape"]
        self.lmk_side = lmk["inputs"][0]["shape"][3]
        self.threshold = float(det.get("params", {}).get("score_threshold", 0.65))
        self.nms_iou = float(det.get("params", {}).get("nms_iou", 0.4))
        self.names = {
            r: (s.get_inputs()[0].name, [o.name for o in s.get_outputs()])
            for r, s in (("det", self.det), ("lmk", self.lmk), ("emb", self.emb))
        }

    def _run(self, role: str, session, x: np.ndarray, t: Timings):
        inp, outs = self.names[role]
        start = time.perf_counter()
        y = session.run(outs, {inp: x})
        t.inference += (time.perf_counter() - start) * 1e3
        return y

    def detect(self, img: np.ndarray, t: Timings) -> list[Face]:
        h, w = img.shape[:2]
        x = resize_planar(img, (0, 0, w, h), self.det_w, self.det_h, self.det_prep)
        scores, boxes = self._run("det", self.det, x, t)
        s = scores[0, :, 1]
        keep = s > np.float32(self.threshold)
        b = boxes[0, keep] * np.array([w, h, w, h], dtype=np.float32)
        b = np.clip(b, 0.0, np.array([w, h, w, h], dtype=np.float32))
        s = s[keep]
        ok = ((b[:, 2] - b[:, 0]) >= 1.0) & ((b[:, 3] - b[:, 1]) >= 1.0)
        b, s = b[ok], s[ok]
        order = np.argsort(-s, kind="stable")
        kept: list[Face] = []
        for i in order:
            if all(_iou(k.box, b[i]) <= self.nms_iou for k in kept):
                kept.append(Face(b[i].copy(), float(s[i])))
        return kept

    def five_points(self, img: np.ndarray, box: np.ndarray, t: Timings) -> np.ndarray:
        h, w = img.shape[:2]
        rect = crop_rect(w, h, box, 1.0)
        side = self.lmk_side
        x = resize_planar(img, rect, side, side, self.lmk_prep)
        (out,) = self._run("lmk", self.lmk, x, t)
        p = out[0, :136].reshape(68, 2).astype(np.float32)
        p = p * np.array([rect[2], rect[3]], dtype=np.float32) + np.array(
            [rect[0], rect[1]], dtype=np.float32
        )
        return np.stack(
            [
                p[[37, 38, 40, 41]].mean(axis=0),
                p[[43, 44, 46, 47]].mean(axis=0),
                p[30],
                p[48],
                p[54],
            ]
        ).astype(np.float64)

    def embed_crop(self, crop: np.ndarray, t: Timings) -> np.ndarray:
        (y,) = self._run("emb", self.emb, crop, t)
        v = y[0].astype(np.float32)
        if self.flip:
            (yf,) = self._run("emb", self.emb, np.ascontiguousarray(crop[..., ::-1]), t)
            v = v + yf[0]
        return v / np.linalg.norm(v)

    def analyse(self, img: np.ndarray, max_faces: int = 16) -> tuple[list[Face], Timings]:
        """Pipeline::analyse: every face (up to `max_faces`, best first) embedded."""
        t = Timings()
        start = time.perf_counter()
        faces = self.detect(img, t)[:max_faces]
        t.detect = (time.perf_counter() - start) * 1e3
        for f in faces:
            self._embed_face(img, f, t)
        return faces, t

    def _embed_face(self, img: np.ndarray, f: Face, t: Timings) -> None:
        a = time.perf_counter()
        pts = self.five_points(img, f.box, t)
        b = time.perf_counter()
        m = similarity(pts, ARCFACE_TEMPLATE)
        if m is None:
            raise ValueError("degenerate landmarks (eyes coincide)")
        crop = warp_planar(img, m, ALIGNED, self.emb_prep)
        c = time.perf_counter()
        f.embedding = self.embed_crop(crop, t)
        d = time.perf_counter()
        t.landmarks += (b - a) * 1e3
        t.align += (c - b) * 1e3
        t.embed += (d - c) * 1e3
        t.faces += 1

    def embed_photo(self, img: np.ndarray) -> tuple[np.ndarray | None, str]:
        """Pipeline::embed_largest without the fallback detector: the template of the largest
        face, from the photo as it is or on its grey margin. Returns (embedding, pass), with
        embedding None and pass "fallback" when facegate would go on to CenterFace, or "none"."""
        t = Timings()

        def largest(faces):
            return max(faces, key=lambda f: _area(f.box)) if faces else None

        def touches(box, w, h):
            return box[0] <= 1 or box[1] <= 1 or box[2] >= w - 1 or box[3] >= h - 1

        def fills(box, w, h):
            return (box[2] - box[0]) > LARGE_FACE * w or (box[3] - box[1]) > LARGE_FACE * h

        h, w = img.shape[:2]
        faces = self.detect(img, t)[:16]
        big = largest(faces)
        if big is not None and not touches(big.box, w, h) and not fills(big.box, w, h):
            self._embed_face(img, big, t)
            return big.embedding, "direct"
        canvas, _ = with_margin(img, self.det_w / self.det_h)
        ch, cw = canvas.shape[:2]
        faces = self.detect(canvas, t)[:16]
        big = largest(faces)
        if big is not None and not touches(big.box, cw, ch):
            self._embed_face(canvas, big, t)
            return big.embedding, "margin"
        return None, "fallback"


def _area(b: np.ndarray) -> float:
    return max(float(b[2] - b[0]), 0.0) * max(float(b[3] - b[1]), 0.0)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = float(iw * ih)
    union = _area(a) + _area(b) - inter
    return 0.0 if union <= 0 else inter / union
