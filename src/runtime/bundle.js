/**
 * Whether the bundle of scripts/build-cli.ts may stand in for the sources: only when this Node
 * built it, from this tree, and no input changed since. Each input is checked by size,
 * modification and change time, as src/runtime/strip-cache.js reasons: the change time moves
 * with every write, replacement or re-extraction of a file (npm gives every file the same
 * mtime), so a developer's edit always sends `obd` back to the sources. One stat per input
 * (~200, ~1 ms) and no hash of any text. Plain JavaScript so that loading it strips nothing.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The directory of the bundle when it is fresh, else undefined. OBD_BUNDLE_DIR names another
 * directory than dist/cli; OBD_DEBUG_BUNDLE=1 says on stderr which runs (and why not the bundle).
 */
export function freshBundle(where = process.env.OBD_BUNDLE_DIR || path.join(ROOT, 'dist', 'cli')) {
  const dir = path.resolve(where);
  let manifest;
  let why;
  try {
    manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    why = staleness(manifest);
  } catch (e) {
    why = e.code === 'ENOENT' ? 'there is none' : `it cannot be checked: ${e.message}`;
  }
  if (process.env.OBD_DEBUG_BUNDLE) process.stderr.write(why ? `obd: running the sources, not the bundle in ${dir}: ${why}\n` : `obd: running the bundle in ${dir}\n`);
  return why ? undefined : dir;
}

function staleness(manifest) {
  if (manifest?.node !== process.version) return `built by Node ${manifest?.node}, this is ${process.version}`;
  if (manifest.root !== ROOT) return `built from ${manifest.root}, these sources are in ${ROOT}`;
  if (!Array.isArray(manifest.inputs)) return 'its manifest lists no inputs';
  for (const [file, size, mtimeMs, ctimeMs] of manifest.inputs) {
    const st = statSync(`${ROOT}/${file}`, { throwIfNoEntry: false });
    if (!st) return `${file} is gone`;
    if (st.size !== size || st.mtimeMs !== mtimeMs || st.ctimeMs !== ctimeMs) return `${file} changed since the build`;
  }
  return undefined;
}
