# A lendnet node (or any lendnet command) in a container:
#   docker build -t lendnet .
#   docker run --rm -v "$PWD/node0:/lendnet/home" -p 26656:26656 lendnet node start --home /lendnet/home
# `lendnet testnet --compose` writes a compose.yaml that runs a whole testnet on this image
# (docs/NODE.md, "A real network").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli cli
COPY consensus consensus
COPY contracts contracts
COPY ledger ledger
COPY node node
RUN pip install . && rm -rf /src/build

# The node's home (key, config, genesis, store) is mounted here; nothing else is written.
VOLUME /lendnet/home
WORKDIR /lendnet
EXPOSE 26656
STOPSIGNAL SIGTERM
ENTRYPOINT ["lendnet"]
CMD ["--help"]
