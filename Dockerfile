# refact-serve image with CUDA: a build stage with the CUDA toolkit (nvcc compiles candle's
# kernels), and a runtime stage with only the CUDA runtime libraries and the binary.
#
#   docker build -t refact-serve .                       # H100 (compute capability 9.0)
#   docker build --build-arg CUDA_COMPUTE_CAP=86 -t refact-serve .   # e.g. A10/RTX 30xx
#   docker run --gpus all -p 8080:8080 \
#     -e REFACT_DATABASE_URL=postgres://... -e REFACT_MODEL=/models/sd-v1-5 \
#     -v /models:/models:ro refact-serve
#
# No config file is copied in: the code defaults apply (authentication ON) and the
# REFACT_* environment supplies the rest. Migrations are embedded in the binary.

ARG CUDA_VERSION=12.4.1
ARG UBUNTU_VERSION=22.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
ARG RUST_VERSION=1.94.0
# candle-kernels cannot query a GPU at build time: name the target architecture.
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:${PATH}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/* \
 && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# Only the manifest and sources of the end-to-end test package (a workspace member);
# its fixtures stay out of the build context (.dockerignore).
COPY tests tests
COPY migrations migrations
# The engine embeds the COCO captions (layer statistics corpus) from here.
COPY assets assets
RUN cargo build --release --locked -p refact-server --features cuda --bin refact \
 && cp target/release/refact /usr/local/bin/refact

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/refact refact
COPY --from=build /usr/local/bin/refact /usr/local/bin/refact
USER 10001
WORKDIR /var/lib/refact
ENV REFACT_BIND=0.0.0.0:8080 \
    REFACT_DATA_DIR=/var/lib/refact/data \
    REFACT_DEVICE=cuda \
    REFACT_LOG=info
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/refact"]
CMD ["serve"]
