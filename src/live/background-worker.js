/**
 * Entry of the snapshot thread, in plain JavaScript (as src/zfile/compress-worker.js): runWorker
 * (src/runtime/bundle.cjs) runs it from the fresh CLI bundle or from the sources, with the
 * parent's compile cache.
 */
import { workerData } from 'node:worker_threads';
import { runWorker } from '../runtime/bundle.cjs';

await runWorker('background-worker', new URL('./background-worker.ts', import.meta.url).href, workerData?.compileCache);
