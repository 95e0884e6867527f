#!/usr/bin/env bash
# Builds nbd-tester-client, the client of the reference NBD test suite (NetworkBlockDevice/nbd
# tests/run), and nbd-server (to time the same cases against), at a pinned commit into a cache
# directory, and prints that directory. Nothing of
# it is committed here: the sources are cloned at build time. Run once (needs the network);
# test/nbd/nbd-tester.test.ts and `node scripts/nbd-tester.ts` use the build when it is there.
#   NBD_SRC=URL-or-path   where to clone from (default: the GitHub repository)
#   OBD_CACHE=DIR         cache root (default: ${XDG_CACHE_HOME:-~/.cache}/obd)
set -euo pipefail
commit=89ba7b5379548d6ebbfa36db15f2b8e3787a09ea
src=${NBD_SRC:-https://github.com/NetworkBlockDevice/nbd.git}
out="${OBD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/obd}/nbd-tester-${commit:0:12}"
if [ -x "$out/tests/run/nbd-tester-client" ]; then echo "$out"; exit 0; fi

pkgs=(git autoconf automake libtool autoconf-archive pkg-config bison flex make gcc libglib2.0-dev libgnutls28-dev)
need=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "nbd-tester: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
git clone -q "$src" "$tmp"
git -C "$tmp" checkout -q "$commit"
(
  cd "$tmp"
  ./autogen.sh >/dev/null 2>&1
  ./configure --disable-manpages >/dev/null
  make -C tests/run nbd-tester-client >/dev/null
  make nbd-server >/dev/null
)
[ -x "$tmp/tests/run/nbd-tester-client" ] || { echo "nbd-tester: build failed" >&2; exit 1; }
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
