#!/bin/sh
# PostgreSQL server binaries (initdb, pg_ctl) for the service's storage tests, from Debian's
# `postgresql` package. Installs it with apt-get when it is missing and we are root; otherwise says
# what to run. The tests start their own server in a temporary directory; nothing is configured here.
set -e
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's postgresql package (for the service's PostgreSQL tests)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
else
    echo "PostgreSQL is missing; the service's PostgreSQL tests need it: sudo apt-get install -y postgresql" >&2
fi
