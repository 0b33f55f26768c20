#!/usr/bin/env bash
# An arm64 Debian sysroot from Debian's packages, without touching the machine's own dpkg/apt state
# (a private apt configuration; packages extracted with dpkg-deb -x): used for the aarch64 Python
# headers of the cross-compiled wheels and for an aarch64 CPython run under qemu-aarch64 -L.
#   arm64_sysroot.sh SUITE DEST PACKAGE...   (SUITE: bookworm, trixie, ...; dependencies included)
# Reused when DEST/.complete exists; prints DEST.
set -euo pipefail
die() { echo "arm64_sysroot: $*" >&2; exit 2; }
[ $# -ge 3 ] || die "usage: arm64_sysroot.sh SUITE DEST PACKAGE..."
SUITE=$1; DEST=$2; shift 2
if [ -e "$DEST/.complete" ]; then echo "$DEST"; exit 0; fi
for c in apt-get:apt apt-cache:apt dpkg-deb:dpkg; do
  command -v "${c%%:*}" >/dev/null 2>&1 || die "'${c%%:*}' not found (apt-get install ${c##*:})"
done
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] \
  || die "Debian's archive keyring is missing (apt-get install debian-archive-keyring)"
APT=$DEST.apt
rm -rf "$DEST" "$APT"
mkdir -p "$APT/parts" "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs" "$DEST"
suites="$SUITE"
case $SUITE in bookworm|trixie) suites="$SUITE $SUITE-updates";; esac
cat > "$APT/parts/arm64.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suites
Components: main
Architectures: arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Architectures: arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
A=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APT/parts" -o Dir::State::Lists="$APT/lists"
   -o Dir::Cache="$APT/cache" -o Dir::State::status=/dev/null -o APT::Architecture=arm64
   -o APT::Architectures::=arm64 -o Debug::NoLocking=1)
apt-get "${A[@]}" update -qq >"$APT/update.log" 2>&1 || die "apt-get update for $SUITE arm64 failed: $(tail -1 "$APT/update.log")"
mapfile -t pkgs < <(apt-cache "${A[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances "$@" | grep -v '^ ' | grep -v '^<' | sort -u)
[ ${#pkgs[@]} -gt 0 ] || die "no packages resolved for $* in $SUITE"
(cd "$APT/debs" && apt-get "${A[@]}" download "${pkgs[@]}" >"$APT/download.log" 2>&1) \
  || die "apt-get download failed: $(tail -1 "$APT/download.log")"
for d in "$APT"/debs/*.deb; do dpkg-deb -x "$d" "$DEST"; done
# merged-/usr packages: the ELF interpreter is /lib/ld-linux-aarch64.so.1
for d in lib bin sbin; do [ -e "$DEST/$d" ] || ln -s "usr/$d" "$DEST/$d"; done
rm -rf "$APT"
touch "$DEST/.complete"
echo "$DEST"
