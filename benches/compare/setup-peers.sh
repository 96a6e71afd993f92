#!/usr/bin/env bash
# Install the peers `benches/compare/compare.py` runs facegate against, pinned, into one venv
# under the cache (default ~/.cache/facegate/peers; FACEGATE_PEERS overrides). Idempotent: a
# venv whose stamp matches the pins below is left as it is.
#
#   - the Python reference of facegate's models: numpy + onnxruntime + Pillow (Python >= 3.11
#     for tomllib, which reads models/manifest.toml)
#   - ageitgey/face_recognition 1.3.0 (HOG detector + dlib ResNet encoding) on dlib-bin, with its
#     model package installed --no-deps (face_recognition's own dependency on `dlib` would build
#     dlib from source; dlib-bin is the same library as a wheel).
set -euo pipefail

dir=${FACEGATE_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/facegate/peers}
python=${PYTHON:-python3}

# One pin per line: what the venv holds. Changing a pin rebuilds the venv.
# onnx (the manifest's pin for its fix_dims transform) is for flops.py, which counts the models'
# multiply-accumulates.
pins_ref=(numpy==2.4.6 onnxruntime==1.31.1 pillow==13.0.0 onnx==1.19.1 protobuf==7.36.2 ml_dtypes==0.7.0)
# face_recognition_models finds its files with pkg_resources (setuptools < 81 still has it).
pins_fr=(dlib-bin==20.0.1.post1 setuptools==80.9.0)
pins_nodeps=(face-recognition==1.3.0 face-recognition-models==0.3.0)
stamp="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ${pins_ref[*]} ${pins_fr[*]} ${pins_nodeps[*]}"

if [[ -f $dir/.stamp && "$(cat "$dir/.stamp")" == "$stamp" ]] && "$dir/bin/python" -W ignore -c \
    'import numpy, onnxruntime, PIL, onnx, dlib, face_recognition' 2>/dev/null; then
    echo "peers: $dir is up to date"
    exit 0
fi

echo "peers: installing into $dir"
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
"$python" -m venv "$dir"
pip=("$dir/bin/python" -m pip --disable-pip-version-check --no-input -q)
"${pip[@]}" install "${pins_ref[@]}"
"${pip[@]}" install "${pins_fr[@]}"
# face_recognition declares `dlib>=19.7` (a source build) and Click (its command line only);
# dlib-bin provides the same `dlib` module as a wheel.
"${pip[@]}" install --no-deps "${pins_nodeps[@]}"
"$dir/bin/python" -W ignore -c 'import numpy, onnxruntime, PIL, onnx, dlib, face_recognition' \
    || { echo "peers: the installed venv does not import" >&2; exit 1; }
echo "$stamp" >"$dir/.stamp"
echo "peers: ready ($("$dir/bin/python" -W ignore -c 'import onnxruntime, dlib, face_recognition as f; from importlib.metadata import version as v; print("onnxruntime", v("onnxruntime"), "dlib-bin", v("dlib-bin"), "face-recognition", v("face-recognition"))'))"
