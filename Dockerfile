# syntax=docker/dockerfile:1
# tritonfleet: the operator (`tritonfleet operator`), the gateway and the sync and
# cleanup Jobs (`tritonfleet sync`), from one image.
#
#   docker build -t <registry>/tritonfleet:0.1.0 .      # wheels from PyPI (needs the network)
#   make image                                          # no registry, no index: hack/image/
#
# Build arguments:
#   BASE_IMAGE  a Python 3.11 image (default python:3.11-slim; `make image` passes
#               a Debian bookworm base it makes itself when no registry is reachable)
#   WHEELHOUSE  where the wheels come from: index (default: `pip wheel` of this
#               checkout, from PyPI) or context (a wheelhouse/ directory in the
#               build context, made beforehand: the build then needs no network)
#
# A wheelhouse holds app/ (the tritonfleet wheel), deps/ (its dependencies) and
# tools/ (pip's own wheel). The runtime stage holds the base, one virtualenv and
# a user: no pip, no compiler, no wheel, no cache.

ARG BASE_IMAGE=python:3.11-slim

# The choice is made in a RUN, not by a FROM ${...} naming a stage: podman/buildah
# would skip the stage that FROM names as unused.
FROM ${BASE_IMAGE} AS wheelhouse
ARG WHEELHOUSE=index
WORKDIR /src
COPY . .
RUN case "$WHEELHOUSE" in \
      context) test -d wheelhouse/deps \
               || { echo "WHEELHOUSE=context: no wheelhouse/ in the build context" >&2; exit 1; } \
               && mv wheelhouse /wheelhouse ;; \
      index) python3 -m pip wheel --no-cache-dir --wheel-dir /wheelhouse/deps . \
             && mkdir /wheelhouse/app \
             && mv /wheelhouse/deps/tritonfleet-*.whl /wheelhouse/app/ \
             && python3 -m pip download --no-cache-dir --no-deps --dest /wheelhouse/tools pip ;; \
      *) echo "WHEELHOUSE is index or context, not '$WHEELHOUSE'" >&2; exit 1 ;; \
    esac

# The virtualenv with the dependencies, on the runtime base (same Python, same
# paths), and the tritonfleet package beside it in /opt/tritonfleet/app (on
# sys.path through a .pth file): a change of code rebuilds a layer of a few MB,
# the dependencies' layer stays cached. pip runs from its wheel
# (`python pip-X.whl/pip`): it installs and is never installed.
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheelhouse /wheelhouse/tools/ /wheelhouse/tools/
COPY --from=wheelhouse /wheelhouse/deps/ /wheelhouse/deps/
RUN python3 -m venv --without-pip /opt/tritonfleet \
    && pip="$(echo /wheelhouse/tools/pip-*.whl)/pip" \
    && /opt/tritonfleet/bin/python "$pip" install --no-warn-script-location /wheelhouse/deps/*.whl \
    && site="$(/opt/tritonfleet/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && echo /opt/tritonfleet/app >"$site/tritonfleet-app.pth"

FROM deps AS app
COPY --from=wheelhouse /wheelhouse/app/ /wheelhouse/app/
RUN pip="$(echo /wheelhouse/tools/pip-*.whl)/pip" \
    && /opt/tritonfleet/bin/python "$pip" install --no-deps --no-warn-script-location \
       --target /opt/tritonfleet/app /wheelhouse/app/*.whl \
    && /opt/tritonfleet/bin/python "$pip" check

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="tritonfleet" \
      org.opencontainers.image.description="Kubernetes operator for fleets of NVIDIA Triton Inference Server" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PATH=/opt/tritonfleet/app/bin:/opt/tritonfleet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin tritonfleet
COPY --from=deps /opt/tritonfleet /opt/tritonfleet
COPY --from=app /opt/tritonfleet/app /opt/tritonfleet/app
# Non-root: the Jobs run as this uid (1000, the one of NVIDIA's Triton image, which
# reads the files they write); the chart runs the operator and the gateway as 10001.
# The root filesystem can be mounted read-only (writes go to /tmp, an emptyDir).
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["tritonfleet"]
CMD ["--help"]
