#!/bin/sh
# Installs the Debian packages dsv3 builds against, when run as root; otherwise says which
# apt command to run.  DSV3_SKIP_DEPS=1 skips the check (machines without apt whose
# libraries come from elsewhere, e.g. the GPU machine's .deps/ folder).
set -eu
[ "${DSV3_SKIP_DEPS:-0}" = 1 ] && exit 0
PKGS="build-essential cmake pkg-config python3 zstd libcjson-dev libzstd-dev libxxhash-dev libssl-dev libarchive-dev libonig-dev"
OPT="python3-numpy" # the tests that forge inputs with numpy skip without it
command -v dpkg-query >/dev/null 2>&1 || { echo "deps: not a Debian system; install: $PKGS (or set DSV3_SKIP_DEPS=1)" >&2; exit 0; }
missing="" optmissing=""
for p in $PKGS $OPT; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$st" in
  *"install ok installed"*) ;;
  *) case " $OPT " in *" $p "*) optmissing="$optmissing $p" ;; *) missing="$missing $p" ;; esac ;;
  esac
done
[ -z "$missing$optmissing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  if [ -z "$missing" ]; then
    echo "dsv3: optional:$optmissing not installed (some tests will skip); sudo apt-get install -y$optmissing" >&2
    exit 0
  fi
  echo "dsv3: missing packages:$missing; run: sudo apt-get install -y$missing$optmissing" >&2
  exit 1
fi
missing="$missing$optmissing"
echo "dsv3: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
