#!/usr/bin/env bash
# Installs what s3gate needs to build and test on Debian 12, from Debian's packages.
# Run as root, or as a user with sudo.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config
  libevent-dev libssl-dev libc-ares-dev libyaml-cpp-dev prometheus-cpp-dev libsystemd-dev
  libcrypt-dev
  # tests: unit framework and the real peers of the integration tests
  catch2 curl openssl python3 ca-certificates procps prometheus
  # packaging: CPack DEB and RPM, the man page, and their checks
  rpm lintian scdoc file man-db systemd
  # the fleet test: HAProxy plays the NLB
  haproxy
  # the fleet template test reads CloudFormation YAML
  python3-yaml
  # the style check of test/run-all.sh (the code follows .clang-format)
  clang-format
  # the fuzz build of test/run-all.sh: clang, its libFuzzer and sanitizer
  # runtimes (only recommended by clang, so named here), and llvm-symbolizer
  # for readable sanitizer stacks
  clang libclang-rt-dev llvm
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-build-deps: everything is installed"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "install-build-deps: installing ${missing[*]}"
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
