/**
 * Entry of the snapshot thread, in plain JavaScript (as src/zfile/compress-worker.js): with
 * the parent's compile cache it loads the TypeScript from the stripped-source cache, so the
 * thread starts without Node's type stripper; then it loads the worker.
 */
import module from 'node:module';
import { workerData } from 'node:worker_threads';
import { useStripCache } from '../runtime/strip-cache.js';

const cacheDir = workerData?.compileCache;
if (typeof cacheDir === 'string') {
  module.enableCompileCache?.(cacheDir);
  useStripCache(cacheDir);
}
await import('./background-worker.ts');
