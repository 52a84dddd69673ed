#!/usr/bin/env bash
# The one test command (README "Tests", and what .ci/run calls).
#
# A fresh machine has only the Rust toolchain: this script first installs what the
# tests need from Debian's and PyPI's package indexes, then runs every test. A tool
# that cannot be installed fails the run; nothing is skipped silently.
#
#   scripts/test.sh            everything: cargo test, the clients' tests (clients/),
#                              then deploy/test.sh (Docker)
#   scripts/test.sh ARGS...    only `cargo test --features system-tests ARGS...` (e.g. a test name)
set -euo pipefail
cd "$(dirname "$0")/.."

# need, need_debian: install Debian packages that are missing.
source scripts/lib.sh

# tests/durability.rs traces a node's sync calls with strace.
need strace strace

# The fault rig (tests/fault/): network namespaces and veth (iproute2), firewall rules
# (nftables), packet delay through a netfilter queue (iptables), rate limits (tc, in
# iproute2) and per-process clock skew (libfaketime).
need_debian iproute2 nftables iptables faketime
# tests/console.rs: the web console in headless Chromium, driven through chromedriver.
need_debian chromium chromium-driver

# tests/api_schemathesis.rs fuzzes the API with Schemathesis (PyPI), kept in a virtual
# environment under target/ so the system's Python stays as it is.
need_debian python3 python3-venv
if [ ! -x target/schemathesis/bin/st ]; then
  echo "scripts/test.sh: installing schemathesis into target/schemathesis" >&2
  python3 -m venv target/schemathesis
  target/schemathesis/bin/pip install -q 'schemathesis>=4.32,<5'
fi

# A test's nodes refuse writes (507 disk_full) while their disk has less than its
# reserve free, 128 MiB at most (docs/design.md, "A full disk"): say how much there
# is, so that a test failing for want of space says so.
tmp="${TMPDIR:-/tmp}"
free_mib=$(df -Pm "$tmp" | awk 'NR == 2 { print $4 }')
echo "scripts/test.sh: ${free_mib} MiB free in $tmp" >&2
if [ "$free_mib" -lt 1024 ]; then
  echo "scripts/test.sh: warning: under 1 GiB free in $tmp; test nodes may refuse writes" >&2
fi

cargo test --locked --features system-tests "$@"
if [ "$#" -eq 0 ]; then
  # The clients in other languages (clients/), against clusters of the built binary.
  scripts/test-clients.sh

  # The image, three containers on their own network, a partition (deploy/test.sh
  # says what); needs the Docker engine and docker-compose, which it does not install.
  need curl curl
  need jq jq
  need readelf binutils
  need strip binutils
  deploy/test.sh
fi
