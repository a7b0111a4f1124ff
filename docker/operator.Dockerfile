# syntax=docker/dockerfile:1.7
# The kubeledger operator image. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/kubeledger/operator:dev .

FROM rust:1-bookworm AS build
# protoc for the node's gRPC client.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kubeledger-operator --bin kubeledger-operator \
 && install -D -m 0755 target/release/kubeledger-operator /out/kubeledger-operator

# rustls (no OpenSSL): glibc and libgcc are all the binary needs.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/kubeledger-operator /usr/local/bin/kubeledger-operator
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["kubeledger-operator"]
CMD ["run"]
