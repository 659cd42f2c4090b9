# One image for every process of the system; each Deployment picks its module.
#   docker build -t checkout-saga:0.1.0 .
#   kind load docker-image checkout-saga:0.1.0 --name checkout-saga
# BASE_IMAGE: any Debian-like image with Python 3.11 and its venv module; the default
# is the official Python image. Locally (no registry) a Debian base made with
# debootstrap is used instead (docs/node.md).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Behind a TLS-inspecting proxy, mount its CA bundle into the build and name it here
# (build-time only: it does not reach the final image).
ARG PIP_CERT=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY operator ./operator
COPY services ./services
COPY devenv ./devenv
COPY gen ./gen
# requirements.lock pins every dependency (scripts/lock): two builds install the same.
RUN python3 -m venv /opt/checkout-saga \
 && /opt/checkout-saga/bin/pip install -c requirements.lock . \
 && /opt/checkout-saga/bin/python -m compileall -q /opt/checkout-saga

FROM ${BASE_IMAGE}
RUN (getent group 10001 || groupadd --gid 10001 app) \
 && (getent passwd 10001 || useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app)
COPY --from=build /opt/checkout-saga /opt/checkout-saga
# Nothing is written at run time (byte code compiled above), so the root filesystem
# may be mounted read-only.
ENV PATH=/opt/checkout-saga/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# Overridden per Deployment: checkout_operator, checkout_operator.worker, user_service,
# product_service, checkout_api, payment_listener, midtrans_sandbox.
ENTRYPOINT ["python", "-m"]
CMD ["checkout_operator"]
