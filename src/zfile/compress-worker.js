/**
 * Worker-thread entry of the compression pool, in plain JavaScript: it enables the parent's
 * compile cache (passed as workerData), then runs the worker from the CLI bundle while that is
 * fresh (src/runtime/bundle.js), else from the sources through the stripped-source cache, so
 * a worker starts without loading Node's type stripper.
 */
import module from 'node:module';
import { workerData } from 'node:worker_threads';
import { freshBundle } from '../runtime/bundle.js';

const cacheDir = workerData?.compileCache;
if (typeof cacheDir === 'string') module.enableCompileCache?.(cacheDir);
const bundle = freshBundle();
// A plain require, with Node's compile cache: a worker ends by being terminated, when no
// exit handler would write the post-run code cache the launcher keeps.
if (bundle) module.createRequire(import.meta.url)(`${bundle.dir}/compress-worker.cjs`);
else {
  if (typeof cacheDir === 'string') (await import('../runtime/strip-cache.js')).useStripCache(cacheDir);
  await import('./compress-worker.ts');
}
