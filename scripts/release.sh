#!/usr/bin/env bash
# Builds the release artefacts of roomcast for users without a Rust toolchain:
#
#   dist/roomcast-VERSION-TARGET.tar.gz   the stripped server binary, its default
#                                         configuration, the docs, deploy assets, licences
#   dist/roomcast-VERSION-image.tar.gz    the container image (docker save), when a
#                                         container engine (docker or podman) is usable
#   dist/SHA256SUMS                       checksums of the above (sha256sum -c SHA256SUMS)
#
# Usage: bash scripts/release.sh [--binary PATH] [--out DIR] [--image | --no-image]
#   --binary PATH  package this binary instead of building one (cargo build --release)
#   --out DIR      where the artefacts go (default: dist/)
#   --image        fail when no container engine can build the image (default: build it
#                  when one is usable, say so and go on when none is)
#   --no-image     do not build the image
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

binary=""
out="$root/dist"
image="auto"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --image) image="required"; shift ;;
    --no-image) image="no"; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '== %s\n' "$*" >&2; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
target=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)
target=${target:-$(uname -m)-unknown-linux-gnu}

if [ -z "$binary" ]; then
  log "building roomcast $version (release, stripped)"
  CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin roomcast
  binary="$root/target/release/roomcast"
fi
if [ ! -x "$binary" ]; then
  echo "no executable at $binary" >&2
  exit 1
fi
built_version=$("$binary" --version | awk '{print $2}')
if [ "$built_version" != "$version" ]; then
  echo "$binary says version $built_version, Cargo.toml says $version" >&2
  exit 1
fi

name="roomcast-$version-$target"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/config" "$out"

install -m 0755 "$binary" "$stage/$name/roomcast"
# Symbols and debug information are about a third of the size; a panic still prints its
# message.
strip --strip-all "$stage/$name/roomcast"
cp config/default.toml "$stage/$name/config/"
cp README.md CHANGELOG.md LICENSE-MIT LICENSE-APACHE "$stage/$name/"
cp -r docs "$stage/$name/docs"
mkdir -p "$stage/$name/deploy"
cp -r deploy/compose.yaml deploy/k8s deploy/prometheus deploy/grafana "$stage/$name/deploy/"
cp migrations/README.md "$stage/$name/docs/migrations.md"

# What the binary needs from the system: glibc (everything else — SQLite, TLS — is
# linked in). Users on older distributions read the minimum here.
glibc=$(objdump -T "$stage/$name/roomcast" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 || true)
needed=$(objdump -p "$stage/$name/roomcast" 2>/dev/null | awk '/NEEDED/ {print $2}' | paste -sd ' ' || true)
cat > "$stage/$name/INSTALL.txt" <<EOF
roomcast $version for $target

Needs: Linux with ${glibc:-glibc} or newer (shared libraries: ${needed:-libc}).
SQLite and TLS (rustls) are built in; Redis and PostgreSQL are optional services.

Run:   ./roomcast                      (loopback, SQLite file roomcast.db, no Redis)
Check: ./roomcast --check-config --config config/default.toml
Help:  ./roomcast --help; README.md; docs/operations.md
Verify the download: sha256sum -c SHA256SUMS (in the directory holding the archive)
EOF

tarball="$name.tar.gz"
# Reproducible archive: fixed owner, order and times.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00Z' \
  -C "$stage" -cf - "$name" | gzip -n > "$out/$tarball"
artefacts=("$tarball")
log "packaged $out/$tarball ($(du -h "$out/$tarball" | cut -f1); binary needs ${glibc:-glibc})"

engine=""
if [ "$image" != "no" ]; then
  for candidate in docker podman; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
      engine="$candidate"
      break
    fi
  done
  if [ -z "$engine" ]; then
    if [ "$image" = "required" ]; then
      echo "no usable container engine (docker or podman with a running daemon)" >&2
      exit 1
    fi
    log "no usable container engine: image skipped (docker build -f deploy/Dockerfile -t roomcast:$version .)"
  else
    log "building the image roomcast:$version with $engine"
    "$engine" build -f deploy/Dockerfile -t "roomcast:$version" .
    image_file="roomcast-$version-image.tar.gz"
    "$engine" save "roomcast:$version" | gzip -n > "$out/$image_file"
    artefacts+=("$image_file")
  fi
fi

(cd "$out" && sha256sum "${artefacts[@]}" > SHA256SUMS)
log "checksums in $out/SHA256SUMS"
printf '%s\n' "${artefacts[@]/#/$out/}" "$out/SHA256SUMS"
