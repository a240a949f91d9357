// Builds the console into dist/ (the files the server embeds), or with --check builds
// into a temporary folder and fails when dist/ differs from that fresh build (the
// committed output must be what the sources give). Prints the size shipped.
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const check = process.argv.includes('--check');
const dist = path.join(root, 'dist');
const out = check ? mkdtempSync(path.join(tmpdir(), 'roomcast-console-')) : dist;

const common = {
  bundle: true,
  minify: true,
  target: ['chrome110', 'firefox115', 'safari16'],
  platform: 'browser',
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
  // The SDK's sources import @msgpack/msgpack; it resolves from this package.
  nodePaths: [path.join(root, 'node_modules')],
  jsx: 'automatic',
  jsxImportSource: 'preact',
};

if (!check) rmSync(dist, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await esbuild.build({ ...common, entryPoints: { app: 'src/app.tsx', 'sign-in': 'src/sign-in.ts' }, format: 'esm', outdir: out, absWorkingDir: root });
await esbuild.build({ ...common, entryPoints: { theme: 'src/theme-early.ts' }, format: 'iife', outdir: out, absWorkingDir: root });
await esbuild.build({ ...common, entryPoints: { console: 'src/console.css' }, outdir: out, absWorkingDir: root });
for (const file of ['index.html', 'sign-in.html', 'icon.svg']) copyFileSync(path.join(root, 'src', file), path.join(out, file));

const files = readdirSync(out).sort();
let raw = 0;
let gzipped = 0;
for (const file of files) {
  const bytes = readFileSync(path.join(out, file));
  raw += bytes.length;
  gzipped += gzipSync(bytes, { level: 9 }).length;
}
console.log(`roomcast console: ${files.length} files, ${raw} bytes, ${gzipped} bytes gzip -9 (${files.join(', ')})`);

if (check) {
  const differs = [];
  const committed = readdirSync(dist).sort();
  for (const file of new Set([...files, ...committed])) {
    const a = files.includes(file) ? readFileSync(path.join(out, file)) : null;
    const b = committed.includes(file) ? readFileSync(path.join(dist, file)) : null;
    if (!a || !b || !a.equals(b)) differs.push(file);
  }
  rmSync(out, { recursive: true, force: true });
  if (differs.length) {
    console.error(`clients/console/dist/ differs from a fresh build in: ${differs.join(', ')}\nRun \`npm run build\` in clients/console and commit dist/.`);
    process.exit(1);
  }
  console.log('clients/console/dist/ matches a fresh build');
}
