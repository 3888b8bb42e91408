# crmhub production image. Build: docker build -t crmhub:latest .
# Runs `crmhub run`; configure with CRMHUB_* / <SYSTEM>_* env vars (see docker-compose.yml).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CRMHUB_HTTP_HOST=0.0.0.0 \
    CRMHUB_HTTP_PORT=8080

RUN groupadd --system --gid 10001 crmhub \
 && useradd --system --uid 10001 --gid crmhub --home-dir /app --shell /usr/sbin/nologin crmhub

# Install from source; README.md is optional (pyproject names it, the build only warns).
WORKDIR /src
COPY pyproject.toml README.m[d] ./
COPY crmhub/ crmhub/
COPY connectors/ connectors/
COPY mappings/ mappings/
COPY flows/ flows/
COPY schemas/ schemas/
RUN pip install --no-cache-dir . \
 && rm -rf build ./*.egg-info \
 && mkdir -p /app/var /data/filedrop \
 && chown -R crmhub:crmhub /app /data

# /app/var holds the SQLite file when no CRMHUB_DATABASE_URL is given (embedded mode);
# /data/filedrop is created here so a named volume mounted on it starts owned by crmhub.
WORKDIR /app
USER crmhub

EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["crmhub"]
CMD ["run"]
