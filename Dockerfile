# syntax=docker/dockerfile:1
# tritonfleet: the operator (`tritonfleet operator`), the sync Jobs (`tritonfleet sync`)
# and the gateway, from one image. Two stages: build the wheel, then install only
# the wheel and its runtime dependencies into a slim Python.

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "build>=1.2"
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
LABEL org.opencontainers.image.title="tritonfleet" \
      org.opencontainers.image.description="Kubernetes operator for fleets of NVIDIA Triton Inference Server" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl \
    && rm -f /tmp/*.whl \
    && useradd --uid 1000 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin tritonfleet
# Non-root, matching the uid the chart and the Jobs run as (runAsUser: 1000);
# the root filesystem can be mounted read-only (writes go to /tmp, an emptyDir).
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["tritonfleet"]
CMD ["--help"]
