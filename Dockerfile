# syntax=docker/dockerfile:1
# One image per function: docker build --build-arg FUNCTION=<name> -t dev.local/<name>:<version> .
# (<version> is the one in pyproject.toml; `make kind-up` builds every functions/<name>/.)
# The image runs functions-framework under gunicorn with explicit WORKERS/THREADS on port 8080,
# as a non-root user. tests/deploy/test_dockerfile.py runs this exact CMD and ENV in a venv.
FROM python:3.11-slim-bookworm

ARG FUNCTION
RUN test -n "${FUNCTION}" || (echo "build with --build-arg FUNCTION=<name of a functions/ folder>" >&2; exit 1)

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app

# Third-party dependencies first (cached layer), then the shared package, then the function.
COPY functions/${FUNCTION}/requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt
COPY pyproject.toml ./
COPY easysmart ./easysmart
RUN pip install --no-deps . && rm -rf build *.egg-info
COPY functions/${FUNCTION} ./functions/${FUNCTION}

# Run-time settings. WORKERS/THREADS are read by functions-framework's gunicorn server; the
# Knative Services and stack.yml set them per function (these are the defaults).
# PROMETHEUS_MULTIPROC_DIR: the workers' metric files, summed by /metrics; a container's /tmp
# starts empty, as the directory must.
ENV FUNCTION=${FUNCTION} \
    PORT=8080 \
    WORKERS=1 \
    THREADS=8 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/esm-metrics

USER 10001:10001
EXPOSE 8080
WORKDIR /app/functions/${FUNCTION}
CMD ["functions-framework", "--target=handle", "--source=main.py", "--port=8080"]
