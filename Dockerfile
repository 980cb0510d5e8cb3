# The jobledger server image: `jobledger serve` by default, `jobledger worker` by command.
#   docker build -t jobledger .                        (a registry and the package index reachable)
#   scripts/build-image                                 (offline: a local base image and a wheelhouse)
# Settings come from the environment: DATABASE_URL (required: the image holds no
# PostgreSQL) and the JOBLEDGER_* variables of the README's Configuration table.

# The base: any Debian-like image whose `python3` is 3.11 or newer and has `venv`.
# scripts/build-image passes a local one made with debootstrap (no registry needed).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS builder
# scripts/build-image removes this stage's older images (the legacy builder keeps them).
LABEL org.jobledger.stage=builder
# A wheelhouse in the build context (wheels/*.whl: the project's wheel and its
# dependencies) is installed from without the index; without one, the project is built
# from its source here and its dependencies come from the index. pip and setuptools are
# removed: installers are not needed at run time.
COPY . /src
RUN python3 -m venv /opt/jobledger \
    && if ls /src/wheels/*.whl >/dev/null 2>&1; then \
        /opt/jobledger/bin/pip install --no-cache-dir --disable-pip-version-check \
            --no-index --find-links /src/wheels jobledger; \
    else \
        /opt/jobledger/bin/pip install --no-cache-dir --disable-pip-version-check /src; \
    fi \
    && /opt/jobledger/bin/pip uninstall --yes --quiet --disable-pip-version-check \
        setuptools pip \
    && /opt/jobledger/bin/jobledger --help >/dev/null

FROM ${BASE}
# A user of its own (written directly: minimal Debian roots lack useradd). It runs jobs
# through the Docker socket only when started with the socket's group:
#   docker run --group-add "$(stat -c %g /var/run/docker.sock)" -v /var/run/docker.sock:/var/run/docker.sock ...
RUN echo 'jobledger:x:10001:10001:jobledger:/home/jobledger:/usr/sbin/nologin' >>/etc/passwd \
    && echo 'jobledger:x:10001:' >>/etc/group \
    && mkdir -p /home/jobledger \
    && chown 10001:10001 /home/jobledger

COPY --from=builder /opt/jobledger /opt/jobledger
# The Docker executor, not `auto`: without the engine (no socket, or not its group) a
# container exits saying so rather than run jobs unisolated inside itself.
ENV PATH=/opt/jobledger/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JOBLEDGER_EXECUTOR=docker \
    JOBLEDGER_STATE_DIR=/home/jobledger/state
USER 10001:10001
WORKDIR /home/jobledger
EXPOSE 8080

# No curl in the image: the standard library asks /healthz (200 once the database answers).
# `worker` serves no HTTP: run workers with --no-healthcheck (compose: healthcheck: disable).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('JOBLEDGER_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["jobledger"]
CMD ["serve", "--host", "0.0.0.0"]

# VERSION is pyproject.toml's (scripts/build-image passes it; a test keeps this default
# equal to it). SOURCE and REVISION: the repository's address and commit, when known.
# Last, so that a new commit rebuilds nothing but the labels.
ARG VERSION=0.1.0
ARG SOURCE=""
ARG REVISION=""
LABEL org.opencontainers.image.title="jobledger" \
      org.opencontainers.image.description="An asyncio, event-sourced job server: jobs in Docker containers, history in PostgreSQL." \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}"
