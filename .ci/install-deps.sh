#!/bin/sh
# Debian packages sinkscope needs to build and test. Run as root (or through sudo).
set -e
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    gcc make pkg-config libc6-dev \
    libopenblas-openmp-dev libjansson-dev libpng-dev libcmocka-dev >/dev/null
