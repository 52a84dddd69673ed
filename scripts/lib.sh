# Shared by scripts/test.sh and scripts/test-clients.sh (sourced, not run): installing
# what the tests need from Debian's packages, so a fresh machine needs only the Rust
# toolchain. A package that cannot be installed fails the run (the callers use set -e).

# need_debian PACKAGE...: installs the Debian packages that are not installed.
need_debian() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "$0: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# need COMMAND PACKAGE: installs the Debian package that provides COMMAND if the
# command is missing (wherever it came from).
need() {
  command -v "$1" >/dev/null || need_debian "$2"
}
