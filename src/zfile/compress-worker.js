/**
 * Worker-thread entry of the compression pool, in plain JavaScript so that starting it strips
 * no TypeScript: runWorker (src/runtime/bundle.cjs) runs the worker from the fresh CLI bundle or
 * from the sources, with the parent's compile cache (passed as workerData).
 */
import { workerData } from 'node:worker_threads';
import { runWorker } from '../runtime/bundle.cjs';

await runWorker('compress-worker', new URL('./compress-worker.ts', import.meta.url).href, workerData?.compileCache);
