#!/usr/bin/env bash
# Headless Chromium for the report's browser test (tests/report/test_report_browser.py), from Debian.
#
#   scripts/chromium.sh install   # installs the Debian package `chromium` if no browser is there (idempotent)
#   scripts/chromium.sh path      # prints the browser's path; exit 1 if none is installed
#
# Needs root and apt for install. The test drives the browser over its DevTools pipe, so nothing else
# (no browser download, no Python package) is needed.
set -euo pipefail

log() { echo "[chromium] $*" >&2; }

browser_path() {
  local bin
  for bin in "${FLOWSPEC_CHROMIUM:-}" chromium chromium-browser chromium-headless-shell; do
    [ -n "$bin" ] || continue
    if command -v "$bin" >/dev/null 2>&1; then
      command -v "$bin"
      return 0
    fi
  done
  return 1
}

install() {
  if browser_path >/dev/null; then
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || { log "not root: cannot install chromium"; exit 3; }
  command -v apt-get >/dev/null 2>&1 || { log "apt-get not found: cannot install chromium"; exit 3; }
  log "installing the Debian package chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  browser_path >/dev/null || { log "chromium was installed but is not on PATH"; exit 3; }
}

case "${1:-install}" in
  install) install ;;
  path) browser_path ;;
  *) log "usage: $0 install|path"; exit 2 ;;
esac
