# syntax=docker/dockerfile:1
# rollback-watchdog as a slim, non-root image that runs `watchdog serve`.
#
#   docker build -t rollback-watchdog .
#   docker run -d -p 8080:8080 \
#     -v /etc/rollback-watchdog:/etc/rollback-watchdog:ro \
#     -v rollback-watchdog-state:/var/lib/rollback-watchdog \
#     --env-file /etc/rollback-watchdog/env rollback-watchdog
#
# The config MUST listen on all interfaces inside the container, or nothing outside it (the -p
# mapping, a Kubernetes Service) can reach the server, since the default is loopback only:
#   server: {listen: 0.0.0.0:8080}
#   store:  {url: sqlite:///var/lib/rollback-watchdog/state.db}
# Secrets come from the environment (${NAME}) or mounted files (${file:/run/secrets/...}); none is
# baked into the image.

# Both stages use the very same base (tests/ops checks it): the venv's interpreter is a symlink to
# /usr/local/bin/python3.11, so the final image must have Python at the same path and version.
# For reproducible builds, pin both to the same digest: python:3.11-slim-bookworm@sha256:...

FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_COLOR=1
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed here.
RUN python -m venv /opt/rollback-watchdog
WORKDIR /src
COPY . .
RUN /opt/rollback-watchdog/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# PYTHONUNBUFFERED: log lines reach `docker logs` at once. PYTHONDONTWRITEBYTECODE: the venv is
# read-only to the runtime user; do not try to write .pyc files next to it.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/rollback-watchdog/bin:$PATH
# A fixed UID/GID so volume ownership and Kubernetes' runAsUser/fsGroup can be set to match.
RUN groupadd --system --gid 10001 watchdog \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/rollback-watchdog --shell /usr/sbin/nologin watchdog \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/rollback-watchdog \
 && install -d -m 0755 /etc/rollback-watchdog
COPY --from=builder /opt/rollback-watchdog /opt/rollback-watchdog
WORKDIR /var/lib/rollback-watchdog
# state.db lives here; a volume keeps deployments and audit trails across container restarts.
VOLUME ["/var/lib/rollback-watchdog"]
USER 10001:10001
EXPOSE 8080
# /healthz answers while the process is alive (DESIGN §4). Python, because slim has no curl;
# urlopen raises on a refused connection or a non-2xx answer, which exits 1 (unhealthy).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
# SIGTERM stops intake and drains in-flight work (server.shutdown_timeout, 10s by default); give
# `docker stop -t` / terminationGracePeriodSeconds more than that. Exec form: the daemon is PID 1
# and receives the signal itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["watchdog"]
CMD ["serve", "--config", "/etc/rollback-watchdog/watchdog.yaml"]
