#!/usr/bin/env bash
# Installs the system packages the test suite drives as real independent clients and services, when missing:
# qemu-img and cryptsetup (LUKS interop), PostgreSQL, Chromium (portal), Debian's python3-azure (a second
# official Key Vault SDK), and libnss-myhostname so *.vault.localhost resolves to loopback. azure-cli 2.45 (the az interop suite).
# xfsprogs: the engine's reflink-snapshot test loop-mounts a small XFS (reflink=1) image. Needs root (Debian).
set -euo pipefail
pkgs=(qemu-utils cryptsetup-bin libnss-myhostname python3-azure postgresql chromium azure-cli xfsprogs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} — run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# *.localhost → loopback through glibc (myhostname NSS module).
if ! grep -Eq '^hosts:.*\bmyhostname\b' /etc/nsswitch.conf; then
  if [ "$(id -u)" = 0 ]; then
    sed -i -E 's/^(hosts:[[:space:]]+files)/\1 myhostname/' /etc/nsswitch.conf
  else
    echo "add 'myhostname' to the hosts: line of /etc/nsswitch.conf (as root)" >&2
    exit 1
  fi
fi
getent hosts probe.vault.localhost >/dev/null || { echo "*.vault.localhost does not resolve; check /etc/nsswitch.conf" >&2; exit 1; }
