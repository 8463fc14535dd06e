# syntax=docker/dockerfile:1
# Base image for Azure ML BYOC online endpoints with the secret sidecar.
#
#   docker build -t sidecar-base .
#   FROM sidecar-base  (then set CMD to the scoring server; see docker/example)
#
# BASE_IMAGE may be any Debian/Ubuntu image with python3 >= 3.10 and its venv
# module, e.g. python:3.12-slim, or an Azure ML inference image such as
#   mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:latest
# (its own Python is 3.9, too old for the sidecar: its Ubuntu python3 3.10 is
# used for /opt/sidecar, with python3-venv installed as root first). For an
# image that already starts its server (runsvdir /var/runit), the drop-in
# recipe in README.md ("Containers") keeps its CMD and adds only the ENTRYPOINT.
#
# No secret and no certificate of the build machine end up in the image: a
# TLS-intercepting proxy's CA is bind-mounted at build time only
# (podman build -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# The pinned runtime lock first, so that a change in the sidecar's source
# reuses this layer. pip compiles the .pyc files here (the venv is read-only
# for the non-root user at run time, and the sidecar's start-up is on the
# container's start path).
RUN python3 -m venv /opt/sidecar
COPY requirements.txt /tmp/sidecar/requirements.txt
RUN /opt/sidecar/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
        -r /tmp/sidecar/requirements.txt
WORKDIR /tmp/sidecar
# README.md* : pyproject.toml names README.md; the glob keeps the build working
# in a checkout without it.
COPY pyproject.toml README.md* ./
COPY sidecar ./sidecar
RUN test -f README.md || : >README.md; \
    /opt/sidecar/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && /opt/sidecar/bin/pip uninstall --yes --quiet --disable-pip-version-check pip setuptools \
    && /opt/sidecar/bin/python -c "import sidecar.cli"

FROM ${BASE_IMAGE}
ARG APP_UID=10001
# The non-root user that the server runs as (numeric in USER, so that
# runAsNonRoot checks can verify it). The symlink dangles until the COPY below.
RUN useradd --no-log-init --uid "${APP_UID}" --user-group --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app \
    && ln -s /opt/sidecar/bin/sidecar /usr/local/bin/sidecar
COPY --from=build /opt/sidecar /opt/sidecar
COPY --chmod=0755 entrypoint.sh /usr/local/bin/entrypoint.sh
ENV PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="sidecar-base" \
      org.opencontainers.image.description="Azure ML BYOC base: resolves secret references with the managed identity, then execs CMD"
USER ${APP_UID}:${APP_UID}
WORKDIR /home/app
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
# No command of its own: images built FROM this one set CMD to their server.
CMD []
