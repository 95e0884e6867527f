/**
 * A cache of type-stripped TypeScript, for entry points written in plain JavaScript (the `obd`
 * launcher, worker threads).
 *
 * Node strips the types of every `.ts` module it loads with a WebAssembly compiler that costs
 * ~35 ms to load in each process and each worker thread, about half of a short command's
 * start-up; Node's compile cache keeps compiled code but not the stripped text. The hook
 * keeps the stripped text in `dir`/obd-ts, keyed by the source's content, so a warm start
 * loads no stripper. Plain JavaScript so that loading it strips nothing.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import module from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';

/** Serves this thread's `.ts` modules from the cache under `base` (a compile-cache directory). */
export function useStripCache(base) {
  if (!module.registerHooks || !module.stripTypeScriptTypes) return;
  const dir = path.join(base, 'obd-ts');
  let made = false;
  module.registerHooks({
    load(url, context, nextLoad) {
      if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
      const source = readFileSync(fileURLToPath(url), 'utf8');
      // Stripping depends only on the text, so the text alone names the entry.
      const file = path.join(dir, `${crc32(source).toString(16)}-${source.length}.js`);
      let js;
      try {
        js = readFileSync(file, 'utf8');
      } catch {
        js = strip(source);
        try {
          if (!made) mkdirSync(dir, { recursive: true });
          made = true;
          const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
          writeFileSync(tmp, js);
          renameSync(tmp, file);
        } catch {
          // A read-only or full cache directory only costs the next run its speed.
        }
      }
      return { format: 'module', source: js, shortCircuit: true };
    },
  });
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
