# pixelgate's container image: `docker build -t pixelgate .`
#
# Two stages: the first builds the wheel and installs it with the scale-out extras into a
# virtualenv; the second is a slim runtime with only that virtualenv, run as an
# unprivileged user. The data directory (/data: SQLite database, local images, generated
# admin key and webhook secret) is a volume. Default command: the embedded deployment
# (`pixelgate serve`: API and worker in one process); compose.yaml runs the scale-out one.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN pip install "build==1.2.2.post1"
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m build --wheel --outdir /dist \
    && python -m venv /opt/pixelgate \
    && /opt/pixelgate/bin/pip install "$(find /dist -name 'pixelgate-*.whl')[postgres,redis,s3]"

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="pixelgate" \
      org.opencontainers.image.description="Self-hosted, provider-agnostic AI image-generation gateway" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 pixelgate \
    && useradd --system --uid 10001 --gid pixelgate --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin pixelgate \
    && mkdir -m 0700 /data \
    && chown pixelgate:pixelgate /data
COPY --from=build /opt/pixelgate /opt/pixelgate
ENV PATH=/opt/pixelgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIXELGATE_DATA_DIR=/data \
    PIXELGATE_HOST=0.0.0.0 \
    PIXELGATE_PORT=8080 \
    PIXELGATE_LOG_FORMAT=json
VOLUME ["/data"]
USER 10001:10001
WORKDIR /data
EXPOSE 8080
# readiness: database, storage, queue and Redis (a worker-only container disables it)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PIXELGATE_PORT', '8080'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pixelgate"]
CMD ["serve"]
