#!/usr/bin/env bash
# Install the system packages alarmd's demo and tests need, only those missing.
# Debian/Ubuntu: apt-get (as root, or through sudo when available).
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have_cmd java || need+=(openjdk-17-jre-headless)
have_cmd mvn || need+=(maven)
have_cmd snmpget || need+=(snmp)
have_cmd systemd-analyze || need+=(systemd)
have_cmd /usr/sbin/snmpd || need+=(snmpd)
have_cmd /usr/sbin/snmptrapd || need+=(snmptrapd)
have_cmd chromium || need+=(chromium)
have_pkg fonts-wqy-zenhei || need+=(fonts-wqy-zenhei)  # CJK glyphs for the zh-CN board (docs/noc-board-zh.png)
have_cmd promtool || need+=(prometheus)
have_cmd prometheus-snmp-exporter || need+=(prometheus-snmp-exporter)
have_cmd gcc || need+=(gcc)  # builds the C half of the BER decoder (setup.py); optional but fast
include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
[ -z "$include" ] || [ -f "$include/Python.h" ] || need+=(python3-dev)
have_pkg python3-venv || need+=(python3-venv)
[ -x /usr/bin/python3 ] || need+=(python3)

if [ ${#need[@]} -eq 0 ]; then
    echo "system-deps: all present"
    exit 0
fi

if ! have_cmd apt-get; then
    echo "system-deps: missing ${need[*]} and no apt-get here; install them by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if have_cmd sudo; then SUDO="sudo"; else
        echo "system-deps: missing ${need[*]}; run as root: apt-get install ${need[*]}" >&2
        exit 1
    fi
fi
echo "system-deps: installing ${need[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
