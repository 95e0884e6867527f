#!/usr/bin/env bash
# Installs the Debian peers the tests talk to (qemu, libnbd tools, nbdkit, fio, the CNCF
# registry, e2fsprogs, skopeo, microsocks as a SOCKS5 proxy, fuse3 and fuse2fs for `obd
# mount`, gnutls-bin for certtool and psktool, libnbd-dev for the TLS benchmark's client, umoci
# as the independent unpacker `obd convert` is checked against, attr's getfattr/setfattr and
# zstd for its test images).
# Idempotent: apt-get runs only when something is missing.
set -euo pipefail
pkgs=(qemu-utils libnbd-bin python3-libnbd nbdkit fio docker-registry e2fsprogs openssl curl skopeo microsocks fuse3 fuse2fs gnutls-bin libnbd-dev umoci attr zstd python3)
need=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
# udev's default rule makes /dev/fuse 0666 on a Debian host; where no udev ran (a container),
# do the same so `obd mount` works for normal users as it would there.
if [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then chmod 0666 /dev/fuse; fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "setup-peers: installing ${need[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
