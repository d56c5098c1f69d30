#!/bin/sh
# Debian packages sinkscope needs to build and test (chromium renders the HTML report in a
# test). Run as root (or through sudo).
set -e
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    gcc g++ make pkg-config libc6-dev \
    libopenblas-openmp-dev liblapack-dev libjansson-dev libpng-dev libcmocka-dev \
    libutf8proc-dev libpcre2-dev libsentencepiece-dev libzip-dev libdnnl-dev \
    chromium fonts-dejavu-core >/dev/null
