# syntax=docker/dockerfile:1.7
# The kubeledger node image: `kubeledger node --config /etc/kubeledger/node.toml`.
# Build from the repository root:
#   docker build -f docker/node.Dockerfile -t ghcr.io/kubeledger/node:dev .

FROM rust:1-bookworm AS build
# protoc for the gRPC code, libclang for RocksDB's bindings.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kubeledger-node --bin kubeledger \
 && install -D -m 0755 target/release/kubeledger /out/kubeledger

# glibc, libgcc and libstdc++ (RocksDB), nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/kubeledger /usr/local/bin/kubeledger
# The StatefulSet runs as 10001 with a read-only root filesystem; data lives on
# the volume at /var/lib/kubeledger.
USER 10001:10001
EXPOSE 7050 7051 9100
ENTRYPOINT ["kubeledger"]
CMD ["node", "--config", "/etc/kubeledger/node.toml"]
