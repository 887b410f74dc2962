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
EXPOSE 8080 9090
ENTRYPOINT ["cells-operator"]
CMD ["run", "--log-format=json"]
