#!/usr/bin/env bash
# Builds the container image taurus:local FROM scratch, with no registry access: the `taurus`
# binary, the shared libraries `ldd` names (glibc is linked dynamically) and a few files
# (/etc/passwd, /etc/nsswitch.conf, /tmp, empty state directories) are copied into a build
# context, and deploy/docker/Dockerfile copies them into an empty image.
#
#   deploy/docker/build-image.sh                  # cargo build -p taurus-cli (target/debug/taurus)
#   deploy/docker/build-image.sh --release        # cargo build --release (target/release/taurus)
#   deploy/docker/build-image.sh --binary PATH    # an existing binary; nothing is built
#
# Options: --tag NAME (default taurus:local), --no-strip (keep debug info in the image's copy;
# the binary itself is never changed), --keep-context (print and keep the build context).
#
# The image has no shell and runs as uid:gid 65532:65532 ("taurus"). /var/lib/taurus and /pki
# belong to that user, so empty named volumes mounted there start out writable by it (Docker
# copies the image directory's ownership into a new named volume).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tag="taurus:local"
binary=""
profile="debug"
strip_copy=1
keep_context=0
# The uid and gid the image runs as (65532: "nonroot" in distroless images; no Debian
# package uses it).
uid=65532

die() { echo "build-image: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    --binary) binary="${2:?--binary needs a PATH}"; shift 2 ;;
    --release) profile="release"; shift ;;
    --tag) tag="${2:?--tag needs a NAME}"; shift 2 ;;
    --no-strip) strip_copy=0; shift ;;
    --keep-context) keep_context=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

command -v docker >/dev/null || die "docker is not installed"
command -v ldd >/dev/null || die "ldd is not installed (package libc-bin)"

if [[ -z "$binary" ]]; then
  if [[ "$profile" == release ]]; then
    (cd "$repo" && cargo build --release -p taurus-cli)
  else
    (cd "$repo" && cargo build -p taurus-cli)
  fi
  binary="$repo/target/$profile/taurus"
fi
[[ -x "$binary" ]] || die "$binary is not an executable file"

ctx="$(mktemp -d "${TMPDIR:-/tmp}/taurus-image.XXXXXX")"
if ((keep_context)); then
  echo "build context: $ctx"
else
  trap 'rm -rf "$ctx"' EXIT
fi
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$ctx/state/var/lib/taurus" "$ctx/state/pki"

cp "$binary" "$root/usr/local/bin/taurus"
if ((strip_copy)) && command -v strip >/dev/null; then
  # Debug info is most of a debug build's size (about 270 MB of it); symbols stay for backtraces.
  strip --strip-debug "$root/usr/local/bin/taurus"
fi

# Every library the dynamic loader will need, at the path it will look for it, and the loader
# itself (the absolute path in the binary's PT_INTERP, which ldd prints without "=>").
libs=$(ldd "$binary" | awk '
  $2 == "=>" && $3 ~ /^\// { print $3 }
  $1 ~ /^\// { print $1 }')
[[ -n "$libs" ]] || die "ldd found no libraries in $binary (a static binary needs none: use --binary with a dynamic one, or adapt this script)"
while read -r lib; do
  [[ -z "$lib" ]] && continue
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done <<<"$libs"

# Host names: glibc >= 2.34 has the `files` and `dns` NSS modules inside libc.so.6, so no
# libnss_*.so is needed; Docker bind-mounts /etc/hosts and /etc/resolv.conf (its embedded DNS
# server, which resolves compose service names) over these placeholders.
glibc=$(ldd --version | awk 'NR == 1 { print $NF }')
if [[ "$(printf '%s\n2.34\n' "$glibc" | sort -V | head -1)" != 2.34 ]]; then
  die "glibc $glibc < 2.34 keeps NSS modules in separate libnss_*.so files; copy them as well"
fi
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/nonexistent\ntaurus:x:%d:%d:taurus:/var/lib/taurus:/nonexistent\n' "$uid" "$uid" >"$root/etc/passwd"
printf 'root:x:0:\ntaurus:x:%d:\n' "$uid" >"$root/etc/group"
: >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
mkdir -p "$root/tmp"
chmod 1777 "$root/tmp"

cp "$here/Dockerfile" "$ctx/Dockerfile"
echo "building $tag from $binary ($(du -sh "$root" | cut -f1) of files)"
docker build --quiet --build-arg "UID=$uid" -t "$tag" "$ctx" >/dev/null
docker image inspect --format "built $tag: {{.Id}} ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))" "$tag"
