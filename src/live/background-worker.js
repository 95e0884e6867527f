/**
 * Entry of the snapshot thread, in plain JavaScript (as src/zfile/compress-worker.js): with
 * the parent's compile cache it runs the worker from the fresh CLI bundle, else the
 * TypeScript from the stripped-source cache, so the thread starts without Node's type stripper.
 */
import module from 'node:module';
import { workerData } from 'node:worker_threads';
import { freshBundle } from '../runtime/bundle.js';

const cacheDir = workerData?.compileCache;
if (typeof cacheDir === 'string') module.enableCompileCache?.(cacheDir);
const bundle = freshBundle();
// A plain require, with Node's compile cache: a worker ends by being terminated, when no
// exit handler would write the post-run code cache the launcher keeps.
if (bundle) module.createRequire(import.meta.url)(`${bundle.dir}/background-worker.cjs`);
else {
  if (typeof cacheDir === 'string') (await import('../runtime/strip-cache.js')).useStripCache(cacheDir);
  await import('./background-worker.ts');
}
