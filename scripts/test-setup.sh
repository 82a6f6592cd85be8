#!/usr/bin/env bash
# What the browser tests need from the system, installed once: Debian's chromium and a CJK font (so Chinese
# renders in screenshots). Runs as root, or through passwordless sudo. The README's test command and .ci/run
# call it; set GLM_WORKBENCH_SKIP_BROWSER_TESTS=1 to skip it (and the browser tests) where apt-get cannot run.
set -euo pipefail
if [ "${GLM_WORKBENCH_SKIP_BROWSER_TESTS:-}" = "1" ]; then
  echo "test-setup: GLM_WORKBENCH_SKIP_BROWSER_TESTS=1, browser tests will be skipped"
  exit 0
fi
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
find /usr/share/fonts -name 'NotoSansCJK*' 2>/dev/null | grep -q . || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "test-setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo -n)
fi
echo "test-setup: installing ${missing[*]} for the browser tests"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
