# syntax=docker/dockerfile:1
# One package, built once as a wheel, three image targets:
#   docker build --target operator .           (default)
#   docker build --target topology-service .
#   docker build --target router .
FROM python:3.11.10-slim-bookworm AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY dataplane ./dataplane
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# The ReDoS checker the operator refuses catastrophic patterns with (ADR 0013), as `make recheck` installs it.
FROM python:3.11.10-slim-bookworm AS recheck
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*
COPY tools/recheck/package.json tools/recheck/package-lock.json tools/recheck/check.js /opt/cells/recheck/
RUN cd /opt/cells/recheck && npm ci --no-audit --no-fund --omit=optional

FROM python:3.11.10-slim-bookworm AS runtime
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin cells
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

FROM runtime AS topology-service
EXPOSE 9100
ENTRYPOINT ["cells-topology-service"]
CMD ["--records", "/etc/cells/topology/topology.json"]

FROM runtime AS router
EXPOSE 8080 9191
ENTRYPOINT ["cells-router"]
CMD ["--rules", "/etc/cells/router/session_token.json"]

FROM runtime AS operator
USER root
RUN apt-get update && apt-get install -y --no-install-recommends nodejs && rm -rf /var/lib/apt/lists/*
COPY --from=recheck /opt/cells/recheck /opt/cells/recheck
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["cells-operator"]
CMD ["run", "--log-format=json"]
