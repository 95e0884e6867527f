#!/usr/bin/env -S node --max-semi-space-size=16
/**
 * `obd` launcher, in plain JavaScript so that starting it strips no TypeScript. It runs the
 * bundle of scripts/build-cli.ts (dist/cli, built by `npm ci`) while that is fresh, with a
 * code cache made after its runs (src/runtime/bundle.cjs), else the sources, with Node's compile
 * cache and src/runtime/strip-cache.js keeping their compiled code and type-stripped text.
 *
 * The young generation is capped at 2 × 16 MiB (V8 reads the flag only at start-up, hence the
 * shebang): a server with many requests in flight otherwise grows it to 64 MiB and keeps it,
 * 30 MB of a 64-layer `obd serve`'s peak, with no throughput measured in return
 * (docs/benchmarks.md, memory).
 */
import module from 'node:module';

// The caches live with the user's other caches ($XDG_CACHE_HOME or ~/.cache): Node's default,
// a directory in /tmp, does not outlive a reboot. NODE_COMPILE_CACHE, when set, wins (Node has
// then enabled the cache before this runs); an unwritable directory falls back to Node's default.
if (module.enableCompileCache && !process.env.NODE_COMPILE_CACHE && !process.env.NODE_DISABLE_COMPILE_CACHE) {
  const { XDG_CACHE_HOME: xdg, HOME: home } = process.env;
  const base = xdg?.startsWith('/') ? xdg : home ? `${home}/.cache` : undefined;
  const ok = base && module.enableCompileCache(`${base}/overlaybd-ts`).status !== module.constants.compileCacheStatus.FAILED;
  if (!ok) module.enableCompileCache();
}
// Once the event loop has drained, end at once: Node's own way out then frees the heap and the
// isolate, ~3 ms of CPU that a process about to end has no use for. 'beforeExit' comes only
// when nothing is pending (no server, timer or I/O left), and process.exit still runs the
// 'exit' handlers (the writer of the bundle's code cache among them) with process.exitCode.
process.once('beforeExit', () => process.exit());
// Required, not imported: src/runtime/bundle.cjs says why it is CommonJS.
const { freshBundle, loadBundled } = module.createRequire(import.meta.url)('../runtime/bundle.cjs');
// The command, as program.ts finds it, picks the area's bundle and names the code cache's coverage.
const command = process.argv.slice(2).find((a) => !a.startsWith('-'));
const bundle = freshBundle({ command });
if (bundle) await loadBundled(bundle, command ?? '').main();
else {
  const cacheDir = module.getCompileCacheDir?.();
  if (cacheDir) (await import('../runtime/strip-cache.js')).useStripCache(cacheDir);
  await (await import('./program.ts')).main();
}
