# syntax=docker/dockerfile:1
# modeltap: the capture proxy (entry point) and the monitor job, in one image.
#
#   docker build -t modeltap:0.1.0 .
#   docker run -p 8080:8080 -e MODELTAP_UPSTREAM_URL=http://model:9000 modeltap:0.1.0
#   docker run --entrypoint modeltap-monitor modeltap:0.1.0 run --captures s3://... ...
#
# Every MODELTAP_* variable is a proxy setting (README, "Settings"). Stages:
# builder (a venv with modeltap[monitor], compiled), runtime (that venv on a slim base,
# non-root, no compilers or pip caches), toy-model (runtime plus loadtest/:
# the toy model and the traffic generator of the compose demo) and proxy
# (the default target). tests/deploy/test_dockerfile.py runs the proxy
# stage's ENTRYPOINT, CMD, ENV and HEALTHCHECK on the test machine.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency ships manylinux wheels (amd64, arm64). The compiler is for
# modeltap's own hot modules, which setup.py compiles with mypyc; it stays in
# this stage. Without it the install would quietly fall back to interpreted
# Python, so the last step fails the build if nothing was compiled.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/modeltap
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY capture capture
COPY server server
COPY monitor_job monitor_job
RUN /opt/modeltap/bin/pip install '.[monitor]' \
    && /opt/modeltap/bin/python -c "import capture, sys; sys.exit(0 if capture.compiled_modules() else 'modeltap was not compiled')"

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/modeltap modeltap \
    && mkdir -p /var/spool/modeltap \
    && chown modeltap:modeltap /var/spool/modeltap
COPY --from=builder /opt/modeltap /opt/modeltap
ENV PATH=/opt/modeltap/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/modeltap
USER 10001:10001

FROM runtime AS toy-model
COPY loadtest /app/loadtest
ENV PYTHONPATH=/app
EXPOSE 9000
CMD ["python", "-m", "uvicorn", "loadtest.toy_model:app", "--host", "0.0.0.0", "--port", "9000"]

FROM runtime AS proxy
# Listen on every interface of the container (the proxy's own default is loopback).
ENV MODELTAP_HOST=0.0.0.0 \
    MODELTAP_PORT=8080
EXPOSE 8080
# slim has no curl: the health check is Python's urllib, on the port the proxy uses.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_modeltap/healthz' % os.environ.get('MODELTAP_PORT', '8080'), timeout=2)"]
# SIGTERM: stop accepting, finish in-flight requests, flush the capture, exit 0;
# each of the two steps may take MODELTAP_SHUTDOWN_TIMEOUT_S (25 s): docker stop -t 60.
STOPSIGNAL SIGTERM
ENTRYPOINT ["modeltap-proxy"]
CMD []
