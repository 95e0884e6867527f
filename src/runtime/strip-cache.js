/**
 * A cache of type-stripped TypeScript, for entry points written in plain JavaScript (the `obd`
 * launcher, worker threads).
 *
 * Node strips the types of every `.ts` module it loads with a WebAssembly compiler that costs
 * ~35 ms to load in each process and each worker thread, about half of a short command's
 * start-up. Node 24.21's compile cache keeps the stripped text as well (a warm `obd` without
 * this hook loads no stripper either, measured as fast), but not every Node that strips types
 * does, so the launcher keeps its own. The hook keeps the stripped text in `dir`/obd-ts, so a
 * warm start loads no stripper. An entry is named by the source's path, inode, size,
 * modification and change times: a hit costs one stat and one read, with no hash of the text
 * (node:zlib's crc32 alone cost ~1.6 ms of start-up to load). The change time is what rules
 * out stale code: an npm install gives every file the same fixed mtime, so an upgrade that
 * keeps a file's size would otherwise hit the old entry, but writing, replacing or
 * re-extracting a file always moves its ctime (no syscall sets it). Plain JavaScript so that
 * loading it strips nothing.
 */
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import module from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Serves this thread's `.ts` modules from the cache under `base` (a compile-cache directory). */
export function useStripCache(base) {
  if (!module.registerHooks || !module.stripTypeScriptTypes) return;
  const dir = path.join(base, 'obd-ts');
  let made = false;
  module.registerHooks({
    load(url, context, nextLoad) {
      if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
      const file = fileURLToPath(url);
      const st = statSync(file, { bigint: true });
      const entry = path.join(dir, `${path.basename(file, '.ts')}-${hash(file)}-${st.ino.toString(36)}-${st.size}-${st.mtimeNs.toString(36)}-${st.ctimeNs.toString(36)}.js`);
      let js;
      try {
        js = readFileSync(entry, 'utf8');
      } catch {
        js = strip(readFileSync(file, 'utf8'));
        try {
          if (!made) mkdirSync(dir, { recursive: true });
          made = true;
          const tmp = `${entry}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
          writeFileSync(tmp, js);
          renameSync(tmp, entry);
        } catch {
          // A read-only or full cache directory only costs the next run its speed.
        }
      }
      return { format: 'module', source: js, shortCircuit: true };
    },
  });
}

/** FNV-1a of a path, as 8 hex digits: short entry names whatever the path's length. */
function hash(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** Node's own stripping (whitespace in place of types, so positions hold), without its "experimental" warning. */
function strip(source) {
  const emit = process.emitWarning;
  process.emitWarning = () => {};
  try {
    return module.stripTypeScriptTypes(source, { mode: 'strip' });
  } finally {
    process.emitWarning = emit;
  }
}
