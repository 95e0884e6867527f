/**
 * Running the bundle of scripts/build-cli.ts in place of the sources.
 *
 * It may stand in for them only when this Node built it, from this tree, and no input changed
 * since. Each input is checked by size, modification and change time, as
 * src/runtime/strip-cache.js reasons: the change time moves with every write, replacement or
 * re-extraction of a file (npm gives every file the same mtime), so a developer's edit always
 * sends `obd` back to the sources. One stat per input of the bundle that runs (~200 for the
 * whole program, 20-140 for an area's; ~1 ms in all with the manifest) and no hash of any text.
 *
 * Node's compile cache keeps only the code compiled before a module runs; every function a
 * command then calls would be compiled again in each process. So the launcher loads the bundle
 * through vm.Script with a code cache of our own, written at the exit of a run, so that it
 * holds what the run compiled (and what the cache it started from held): `obd --help` 71 → 55
 * ms of CPU, `obd info` 78 → 66. It is rewritten when a command runs for the first time with
 * this build, so a dozen writes at most. Plain JavaScript so that loading it strips nothing,
 * and CommonJS: as an ES module, it and its five builtins (each an ES-module facade) cost
 * `obd info` ~4 ms of CPU more (median of 31 interleaved runs, load ~1.8).
 */
'use strict';
const { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } = require('node:fs');
const nodeModule = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

const ROOT = path.join(__dirname, '..', '..');

/**
 * The bundle to run ({dir, id, name}) if it is fresh, else undefined: `name`, else the area
 * bundle the manifest names for `command` (the first operand, as program.ts finds the area),
 * else the whole program. Only the chosen bundle's inputs are checked: a change elsewhere does
 * not touch what it runs. OBD_BUNDLE_DIR names another directory than dist/cli;
 * OBD_DEBUG_BUNDLE=1 says on stderr which file runs (and why not the bundle).
 */
function freshBundle({ name, command } = {}, where = process.env.OBD_BUNDLE_DIR || path.join(ROOT, 'dist', 'cli')) {
  const dir = path.resolve(where);
  let manifest;
  let why;
  try {
    manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    name ??= (command !== undefined && Object.hasOwn(manifest?.commands ?? {}, command) && manifest.commands[command]) || 'program';
    why = staleness(manifest, name);
  } catch (e) {
    why = e.code === 'ENOENT' ? 'there is none' : `it cannot be checked: ${e.message}`;
  }
  if (process.env.OBD_DEBUG_BUNDLE) process.stderr.write(why ? `obd: running the sources, not the bundle in ${dir}: ${why}\n` : `obd: running the bundle in ${dir} (${name}.cjs)\n`);
  return why ? undefined : { dir, id: manifest.id, name };
}

function staleness(manifest, name) {
  if (manifest?.node !== process.version) return `built by Node ${manifest?.node}, this is ${process.version}`;
  if (manifest.root !== ROOT) return `built from ${manifest.root}, these sources are in ${ROOT}`;
  const held = manifest.bundles?.[name];
  if (!Array.isArray(manifest.inputs) || typeof manifest.id !== 'string' || !Array.isArray(held)) return `its manifest lists no inputs, no build id or no ${name}.cjs`;
  for (const i of held) {
    const [file, size, mtimeMs, ctimeMs] = manifest.inputs[i] ?? [];
    if (typeof file !== 'string') return `its manifest lists no input ${i}, which ${name}.cjs holds`;
    const st = statSync(`${ROOT}/${file}`, { throwIfNoEntry: false });
    if (!st) return `${file} is gone`;
    if (st.size !== size || st.mtimeMs !== mtimeMs || st.ctimeMs !== ctimeMs) return `${file} changed since the build`;
  }
  return undefined;
}

/**
 * The exports of the chosen bundle (NAME.cjs), run as CommonJS with its code cache in the
 * compile cache directory (obd-bundle/TREE/NAME-ID.v8, with NAME-ID.v8.json listing the commands it
 * has seen run); `command` names this run's. Without a compile cache, a plain require.
 */
function loadBundled(bundle, command) {
  const { name } = bundle;
  const file = path.join(bundle.dir, `${name}.cjs`);
  const require = nodeModule.createRequire(file);
  const base = nodeModule.getCompileCacheDir?.();
  if (!base) return require(file);
  // One directory per tree: two checkouts run in turn (a --baseline benchmark) must not
  // delete each other's caches as older builds.
  const dir = path.join(base, 'obd-bundle', treeKey(ROOT));
  const cacheFile = path.join(dir, `${name}-${bundle.id}.v8`);
  let cachedData;
  let seen = [];
  try {
    cachedData = readFileSync(cacheFile);
    seen = JSON.parse(readFileSync(`${cacheFile}.json`, 'utf8'));
  } catch {
    // None yet (or no list): this run writes them.
  }
  // Node's CommonJS wrapper, on the bundle's first line so that line numbers hold. Read as
  // latin1: the bundle is ASCII (scripts/build-cli.ts), which then needs no UTF-8 decoding.
  const source = `(function (exports, require, module, __filename, __dirname) { ${readFileSync(file, 'latin1')}\n})`;
  const script = new vm.Script(source, { filename: file, cachedData, importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER });
  if (script.cachedDataRejected) seen = [];
  if (!cachedData || !Array.isArray(seen) || !seen.includes(command)) {
    process.once('exit', () => saveCache(dir, cacheFile, name, script, [...(Array.isArray(seen) ? seen : []), command]));
  }
  const mod = { exports: {}, filename: file, id: file, loaded: false, require };
  script.runInThisContext().call(mod.exports, mod.exports, require, mod, file, bundle.dir);
  mod.loaded = true;
  return mod.exports;
}

/** A short name for a path (FNV-1a, 32 bits): no node:crypto at start-up for it. */
function treeKey(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** Writes a code cache and its list of commands (each atomically) in place of those of older builds. */
function saveCache(dir, cacheFile, name, script, seen) {
  try {
    mkdirSync(dir, { recursive: true });
    const mine = path.basename(cacheFile);
    // Another build's files of this bundle: NAME-ID.v8[.json], the id being base36-hex.
    const others = new RegExp(`^${name}-[0-9a-z]+-[0-9a-f]+\\.v8`);
    for (const old of readdirSync(dir)) if (others.test(old) && !old.startsWith(mine)) rmSync(path.join(dir, old), { force: true });
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    writeFileSync(tmp, script.createCachedData());
    renameSync(tmp, cacheFile);
    writeFileSync(tmp, JSON.stringify(seen));
    renameSync(tmp, `${cacheFile}.json`);
  } catch {
    // A read-only or full cache directory only costs the next run its speed.
  }
}

/**
 * A worker thread's entry (src/zfile/compress-worker.js, src/live/background-worker.js): with
 * the parent's compile cache, the bundle's `name`.cjs while the bundle is fresh, else the
 * TypeScript `source` (a URL) through the stripped-source cache, so the thread starts without
 * Node's type stripper. A plain require, not loadBundled(): a worker ends by being terminated,
 * when no exit handler would write a post-run code cache.
 */
async function runWorker(name, source, cacheDir) {
  if (typeof cacheDir === 'string') nodeModule.enableCompileCache?.(cacheDir);
  const bundle = freshBundle({ name });
  if (bundle) return require(path.join(bundle.dir, `${name}.cjs`));
  if (typeof cacheDir === 'string') (await import('./strip-cache.js')).useStripCache(cacheDir);
  await import(source);
}

module.exports = { freshBundle, loadBundled, runWorker };
