# syntax=docker/dockerfile:1
# Three distributions, built once as wheels (ADR 0016), three image targets:
#   docker build --target operator .           (default): cells-operator + cells-dataplane + cells-formats
#   docker build --target topology-service .   cells-dataplane + cells-formats only: no kopf, no kubernetes
#   docker build --target router .             the same wheels as topology-service
# devtools/ (cells-devtools: local control plane, demo, mirror) goes into no image.
# The data plane's wheels need no operator source: an edit of operator/ rebuilds only the operator image.
FROM python:3.11.10-slim-bookworm AS dataplane-wheels
WORKDIR /src
COPY formats ./formats
COPY dataplane ./dataplane
RUN pip wheel --no-cache-dir --wheel-dir /wheels/dataplane ./formats ./dataplane

FROM dataplane-wheels AS operator-wheels
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels/operator --find-links /wheels/dataplane ./formats ./dataplane .

# The ReDoS checker the operator refuses catastrophic patterns with (ADR 0013), as `make recheck` installs it.
FROM python:3.11.10-slim-bookworm AS recheck
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*
COPY tools/recheck/package.json tools/recheck/package-lock.json tools/recheck/check.js /opt/cells/recheck/
RUN cd /opt/cells/recheck && npm ci --no-audit --no-fund --omit=optional

FROM python:3.11.10-slim-bookworm AS base
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin cells
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# The data plane's images: the wheels of formats/ and dataplane/ and their dependencies, nothing else.
FROM base AS dataplane-runtime
COPY --from=dataplane-wheels /wheels/dataplane /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels cells-dataplane && rm -rf /wheels
USER 65532:65532

FROM dataplane-runtime AS topology-service
EXPOSE 9100
ENTRYPOINT ["cells-topology-service"]
CMD ["--records", "/etc/cells/topology/topology.json"]

FROM dataplane-runtime AS router
EXPOSE 8080 9191
ENTRYPOINT ["cells-router"]
CMD ["--rules", "/etc/cells/router/session_token.json"]

FROM base AS operator
RUN apt-get update && apt-get install -y --no-install-recommends nodejs && rm -rf /var/lib/apt/lists/*
COPY --from=operator-wheels /wheels/operator /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels cells-operator && rm -rf /wheels
COPY --from=recheck /opt/cells/recheck /opt/cells/recheck
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["cells-operator"]
CMD ["run", "--log-format=json"]
