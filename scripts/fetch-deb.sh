#!/usr/bin/env bash
# Fetch packages from another Debian suite (trixie, sid) and unpack them into a directory,
# without touching the host's apt sources or its dpkg database (../shared/reference/
# REAL-TOOLS.md, "Where real packages come from here"): a private apt configuration under
# the cache directory, `apt-get download`, then `dpkg-deb -x`. Meant for static binaries
# (etcd 3.5, kubectl) that the host's own suite ships in another version.
#
#   scripts/fetch-deb.sh SUITE DEST PACKAGE[=VERSION]...
#
# SUITE   a Debian suite on the mirror: trixie, sid, ...
# DEST    directory the packages are unpacked into (made if missing); DEST/usr/bin/... then
# PACKAGE a package name, optionally =VERSION (a Debian version, as apt-get download takes it)
#
# Environment: EK8S_DEBIAN_MIRROR (default http://deb.debian.org/debian), EK8S_DEB_CACHE
# (default /var/cache/ek8s-debs). The suite's package lists are refreshed when older than a
# day. Prints one line per package: "<package> <version> -> DEST". Exit 2 on bad arguments,
# 1 when apt-get or dpkg-deb fails (its message on stderr). Root is not needed when the cache
# directory is writable.
set -euo pipefail

usage() { echo "usage: $0 SUITE DEST PACKAGE[=VERSION]..." >&2; exit 2; }
[ $# -ge 3 ] || usage
suite=$1 dest=$2
shift 2
case "$suite" in *[!a-z0-9-]*|"") echo "fetch-deb.sh: SUITE must be a Debian suite name, got '$suite'" >&2; exit 2 ;; esac

mirror=${EK8S_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${EK8S_DEB_CACHE:-/var/cache/ek8s-debs}/$suite
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$cache/lists/partial" "$cache/archives/partial" "$cache/debs" "$dest"
echo "deb [signed-by=$keyring] $mirror $suite main" > "$cache/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$cache/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$cache/lists" -o "Dir::Cache=$cache" -o "Dir::Cache::archives=$cache/archives"
  -o "Dir::State::status=$cache/status" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
)
: > "$cache/status.new" && { [ -s "$cache/status" ] || mv "$cache/status.new" "$cache/status"; }
rm -f "$cache/status.new"  # an empty dpkg status: the host's installed versions never win

stamp=$cache/lists/.updated
if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
  apt-get -qq "${apt_opts[@]}" update >&2
  touch "$stamp"
fi

cd "$cache/debs"
for spec in "$@"; do
  name=${spec%%=*}
  case "$name" in *[!a-z0-9.+-]*|"") echo "fetch-deb.sh: bad package name '$name'" >&2; exit 2 ;; esac
  version=$(apt-cache "${apt_opts[@]}" show --no-all-versions "$spec" 2>/dev/null | awk '/^Version:/ {print $2; exit}' || true)
  [ -n "$version" ] || { echo "fetch-deb.sh: $spec not found in $suite" >&2; exit 1; }
  deb=""
  for f in "$name"_*.deb; do
    [ -e "$f" ] && [ "$(dpkg-deb -f "$f" Version)" = "$version" ] && deb=$f
  done
  if [ -z "$deb" ]; then
    apt-get -qq "${apt_opts[@]}" download "$name=$version" >&2
    for f in "$name"_*.deb; do [ "$(dpkg-deb -f "$f" Version)" = "$version" ] && deb=$f; done
  fi
  dpkg-deb -x "$deb" "$dest"
  echo "$name $(dpkg-deb -f "$deb" Version) -> $dest"
done
