#!/bin/sh
# Debian's Chromium for the report's browser test and the README screenshot (driven by Playwright
# through its executable path; no browser is ever downloaded). Installs it with apt-get when it is
# missing and we are root; otherwise says what to run (the browser test then skips, saying why).
set -e
if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium (for the report's browser test)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "Chromium is missing; the report's browser test needs it: sudo apt-get install -y chromium" >&2
fi
