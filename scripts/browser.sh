#!/usr/bin/env bash
# Headless Chromium for the report's browser test (tests/test_report.py), from Debian's
# package: Playwright drives it through executablePath, so no browser is downloaded from
# a CDN. Idempotent; does nothing where a chromium is already on the PATH.
set -uo pipefail

if [ -n "${LANDSCAPE_CHROMIUM:-}" ] && [ -x "${LANDSCAPE_CHROMIUM}" ]; then exit 0; fi
if command -v chromium >/dev/null 2>&1; then exit 0; fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "[browser] chromium is missing and installing it needs root: run 'apt-get install chromium' (the browser test is skipped outside CI, fails in CI)"
        exit 0
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[browser] chromium is missing and this is not a Debian-like system: install Chromium and set LANDSCAPE_CHROMIUM to its path"
    exit 0
fi
echo "[browser] installing Debian's chromium for the report's browser test"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends chromium >/tmp/landscape-apt.log 2>&1; then
    $SUDO apt-get update -q >>/tmp/landscape-apt.log 2>&1
    $SUDO apt-get install -y -q --no-install-recommends chromium >>/tmp/landscape-apt.log 2>&1 \
        || { echo "[browser] apt-get could not install chromium (see /tmp/landscape-apt.log)"; exit 0; }
fi
echo "[browser] $(chromium --version 2>/dev/null)"
