/**
 * Worker-thread entry of the compression pool, in plain JavaScript: with the parent's compile
 * cache (passed as workerData) it serves the worker's TypeScript from the stripped-source
 * cache, so a worker starts without loading Node's type stripper; then it loads the worker.
 */
import module from 'node:module';
import { workerData } from 'node:worker_threads';
import { useStripCache } from '../runtime/strip-cache.js';

const cacheDir = workerData?.compileCache;
if (typeof cacheDir === 'string') {
  module.enableCompileCache?.(cacheDir);
  useStripCache(cacheDir);
}
await import('./compress-worker.ts');
