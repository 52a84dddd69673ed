#!/usr/bin/env bash
# Builds a statically linked, stripped slct and the image around it:
#   deploy/build.sh                      # tags slct:latest
#   SLCT_IMAGE=slct:v1 deploy/build.sh   # another tag
#
# The binary is static (glibc with +crt-static: the image has no libc) and resolves
# host names without glibc's NSS, which a static binary cannot load: reqwest's
# hickory-dns resolver reads /etc/hosts and /etc/resolv.conf itself. So peers may be
# named by host name (`slct1:7001`) in the image, as on any machine.
#
# The release profile keeps line tables of slct's own code for profiling; the copy in the
# image is stripped. The cargo target directory is the usual one (or $CARGO_TARGET_DIR),
# so a second run rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${SLCT_IMAGE:-slct:latest}
target=x86_64-unknown-linux-gnu
binary=${CARGO_TARGET_DIR:-target}/$target/release/slct

# The cluster secret the compose file gives every node: made once, kept private.
if [ ! -f deploy/slct.env ]; then
  (umask 077 && echo "SLCT_CLUSTER_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > deploy/slct.env)
  echo "wrote a new cluster secret to deploy/slct.env"
fi

RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" --bin slct
if readelf -l "$binary" | grep -q 'Requesting program interpreter'; then
  echo "deploy/build.sh: $binary is dynamically linked; a FROM scratch image cannot run it" >&2
  exit 1
fi

# A build context of its own: the Dockerfile, the stripped binary and an empty data/
# (deploy/ itself holds slct.env, which must not travel to the Docker daemon).
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp deploy/Dockerfile "$context/"
strip --strip-all -o "$context/slct" "$binary"
mkdir "$context/data"
docker build --quiet -t "$image" "$context" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "built $image: $size bytes ($((size / 1000000)) MB; unstripped binary $(stat -c %s "$binary") bytes)"
