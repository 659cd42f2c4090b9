# One image for every process of the system; each Deployment picks its command.
#   docker build -t checkout-saga:0.1.0 .
#   kind load docker-image checkout-saga:0.1.0 --name checkout-saga
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY services ./services
COPY devenv ./devenv
COPY gen ./gen
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --uid 10001 --no-create-home app
COPY --from=build /install /usr/local
USER 10001
ENV PYTHONUNBUFFERED=1
# Overridden per Deployment: checkout_operator, checkout_operator.worker, user_service,
# product_service, checkout_api, payment_listener, midtrans_sandbox.
ENTRYPOINT ["python", "-m"]
CMD ["checkout_operator"]
