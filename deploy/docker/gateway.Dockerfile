# The gateway: small, non-root, no compilers in the final stage. It carries the litellm SDK for
# non-OpenAI providers; the process imports it only when such a deployment is configured.
# Build from the repository root: docker build -f deploy/docker/gateway.Dockerfile -t mmgateway/gateway .
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY deploy/docker/gateway.lock /tmp/gateway.lock
RUN /opt/venv/bin/pip install --requirement /tmp/gateway.lock
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY gateway /src/gateway
RUN /opt/venv/bin/pip install --no-deps /src

FROM python:3.11.14-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 GATEWAY_CONFIG=/etc/gateway/config.yaml \
    GATEWAY_DATA_DIR=/data
USER 10001:10001
EXPOSE 4000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:4000/health', timeout=2).status != 200)"]
ENTRYPOINT ["gateway", "serve"]
CMD ["--host", "0.0.0.0", "--port", "4000"]
