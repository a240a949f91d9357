#!/usr/bin/env bash
# Bundle size of the SDK as a browser app ships it: esbuild --bundle --minify, gzip -9.
set -euo pipefail
cd "$(dirname "$0")/.."
esbuild=node_modules/.bin/esbuild
all=$("$esbuild" dist/index.js --bundle --minify --format=esm --platform=browser --log-level=warning | gzip -9 | wc -c)
own=$("$esbuild" dist/index.js --bundle --minify --format=esm --platform=browser --external:@msgpack/msgpack --log-level=warning | gzip -9 | wc -c)
echo "roomcast SDK, min+gzip: ${all} bytes with @msgpack/msgpack, ${own} bytes without"
