# syntax=docker/dockerfile:1
# One image for the operator (and, later, the data-plane services): the package is built once as a
# wheel in the builder stage and installed into a slim, non-root runtime.
FROM python:3.11.10-slim-bookworm AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.10-slim-bookworm
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin cells
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080 9090
ENTRYPOINT ["cells-operator"]
CMD ["run", "--log-format=json"]
