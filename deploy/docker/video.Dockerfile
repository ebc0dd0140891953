# The video service: small, non-root, no compilers in the final stage; data lives on a volume.
# Build from the repository root: docker build -f deploy/docker/video.Dockerfile -t mmgateway/video .
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY deploy/docker/video.lock /tmp/video.lock
RUN /opt/venv/bin/pip install --requirement /tmp/video.lock
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY video /src/video
RUN /opt/venv/bin/pip install --no-deps /src

FROM python:3.11.14-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin video \
    && mkdir /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 VIDEO_DATA_DIR=/data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"]
ENTRYPOINT ["video", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
