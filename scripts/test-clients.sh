#!/usr/bin/env bash
# Tests of the clients in other languages (clients/; scripts/test.sh runs this too).
# Each client's tests start three-node clusters of the built binary on 127.0.0.1
# ephemeral ports (SLCT_BIN). A tool that is missing is installed, or the run fails:
# nothing is skipped.
#
#   scripts/test-clients.sh          every client
#   scripts/test-clients.sh python   one of them (python, go)
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}
# The features scripts/test.sh tests with, so the binary it built is reused as it is.
cargo build --locked --features system-tests --bin slct
# cargo's target directory: the usual one, or $CARGO_TARGET_DIR (absolute or relative).
export SLCT_BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/slct"

# need_debian: installs Debian packages that are missing.
source scripts/lib.sh

if [ "$which" = all ] || [ "$which" = python ]; then
  # Installed the way a user installs it, into a virtual environment under target/.
  need_debian python3 python3-venv
  python3 -m venv target/py-client
  target/py-client/bin/pip install -q ./clients/python
  target/py-client/bin/python -m unittest discover -s clients/python/tests
fi

if [ "$which" = all ] || [ "$which" = go ]; then
  # Go from Debian (1.19 on bookworm: the module needs no newer).
  need_debian golang-go
  unformatted=$(gofmt -l clients/go)
  if [ -n "$unformatted" ]; then
    echo "scripts/test-clients.sh: gofmt would change: $unformatted" >&2
    exit 1
  fi
  (cd clients/go && go vet ./... && go test -count=1 ./...)
fi
