#!/usr/bin/env bash
# Builds a statically linked slct and the `slct:latest` image around it.
# Static glibc cannot load NSS modules, so in the image peers are given by IP address
# (docker-compose.yml pins them), never by host name.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target x86_64-unknown-linux-gnu
cp target/x86_64-unknown-linux-gnu/release/slct deploy/slct
docker build -t slct:latest deploy
rm deploy/slct
