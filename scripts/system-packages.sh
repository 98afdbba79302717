#!/usr/bin/env bash
# Debian packages the test suite uses, installed with apt where it can (root or password-less sudo):
#   chromium               the report's headless-browser test (Playwright drives it; no browser download)
#   dataset-fashion-mnist  the Fashion-MNIST reader's test on the real files (/usr/share/datasets/fashion-mnist)
# Where apt cannot install them, the tests that need them skip with a reason (outside CI for chromium).
# Idempotent: a package already present is not touched.
set -uo pipefail

wanted=()
if [ -z "${LANDSCAPE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then wanted+=(chromium); fi
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then wanted+=(dataset-fashion-mnist); fi
[ ${#wanted[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "[system] ${wanted[*]} missing and installing needs root: run 'apt-get install ${wanted[*]}' (their tests skip until then)"
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[system] ${wanted[*]} missing and this is not a Debian-like system (their tests skip); for the browser test install Chromium and set LANDSCAPE_CHROMIUM to its path"
    exit 0
fi
echo "[system] installing Debian's ${wanted[*]} with apt (about a minute; log in /tmp/landscape-apt.log)"
export DEBIAN_FRONTEND=noninteractive
for package in "${wanted[@]}"; do
    if ! $SUDO apt-get install -y -q --no-install-recommends "$package" >>/tmp/landscape-apt.log 2>&1; then
        $SUDO apt-get update -q >>/tmp/landscape-apt.log 2>&1
        $SUDO apt-get install -y -q --no-install-recommends "$package" >>/tmp/landscape-apt.log 2>&1 \
            || echo "[system] apt-get could not install $package (see /tmp/landscape-apt.log); its tests skip"
    fi
done
command -v chromium >/dev/null 2>&1 && echo "[system] $(chromium --version 2>/dev/null)"
exit 0
