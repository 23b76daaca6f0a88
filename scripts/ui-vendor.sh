#!/usr/bin/env bash
# Re-vendors the web UI's one third-party file set: uPlot (MIT), the time-series chart library.
#
# The built files are committed under crates/ui/assets/vendor/uplot/, so neither `cargo build`
# nor a newcomer needs npm or the network; run this only to change the uPlot version. It fetches
# the exact release tarball with `npm pack`, checks it against the pinned SHA-256, and copies the
# minified browser build, its stylesheet and its license.
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.6.32
sha256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d
dest=crates/ui/assets/vendor/uplot

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$version" >/dev/null)
tarball="$tmp/uplot-$version.tgz"
echo "$sha256  $tarball" | sha256sum --check --quiet
tar -xzf "$tarball" -C "$tmp"

mkdir -p "$dest"
cp "$tmp/package/dist/uPlot.iife.min.js" "$dest/uPlot.iife.min.js"
cp "$tmp/package/dist/uPlot.min.css" "$dest/uPlot.min.css"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
echo "uplot $version" >"$dest/VERSION"
echo "scripts/ui-vendor.sh: uPlot $version vendored into $dest"
