# The Kurable operator image. Multi-stage: the build stage has pip and whatever
# wheels need to build; the final stage has the interpreter, the virtual environment
# and nothing else, and runs as an unprivileged user with a read-only root filesystem
# (the chart mounts an emptyDir at /tmp).
#
#   docker build -t ghcr.io/kurable/kurable:0.1.0 .
#
# Pinned: Python 3.11 on Debian bookworm, slim. Bump both stages together.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kurable
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/kurable/bin/pip install --upgrade pip \
 && /opt/kurable/bin/pip install . \
 && /opt/kurable/bin/pip uninstall -y pip setuptools

FROM ${PYTHON_IMAGE} AS final
LABEL org.opencontainers.image.title="kurable" \
      org.opencontainers.image.description="Durable execution on Kubernetes: the Kurable operator" \
      org.opencontainers.image.source="https://github.com/kurable/kurable" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/kurable/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 kurable \
 && useradd --system --uid 10001 --gid kurable --no-create-home --shell /usr/sbin/nologin kurable
COPY --from=build /opt/kurable /opt/kurable
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["kurable"]
CMD ["operator", "--liveness", "http://0.0.0.0:8080/healthz"]
