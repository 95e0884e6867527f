/**
 * Worker-thread entry of the compression pool: compresses the batches it is sent and hands
 * the buffers back (transferred, so nothing is copied and the pool can reuse them).
 */
import os from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { createCodec, type BlockCodec } from './codec.ts';
import { compressBlocks, type BlockParams } from './compress-blocks.ts';

export interface CompressJob {
  id: number;
  params: BlockParams;
  input: ArrayBuffer;
  inputLength: number;
  output: ArrayBuffer;
  lengths: ArrayBuffer;
}

/** Sent once, when the worker is listening for jobs. */
export interface CompressReady {
  ready: true;
}

export interface CompressDone {
  id: number;
  input: ArrayBuffer;
  inputLength: number;
  output: ArrayBuffer;
  lengths: ArrayBuffer;
  size: number;
  error?: string;
}

// Linux applies a nice value given for pid 0 to the calling thread only: the workers yield to the serving thread.
if (typeof workerData?.priority === 'number' && workerData.priority !== 0) {
  try {
    os.setPriority(0, workerData.priority);
  } catch {
    // Not permitted or not supported: compress at the caller's priority.
  }
}

/** Codec contexts by algorithm and level, kept for the worker's lifetime. */
const codecs = new Map<string, BlockCodec>();

parentPort!.on('message', (job: CompressJob) => {
  let size = 0;
  let error: string | undefined;
  try {
    const key = `${job.params.algo}:${job.params.level}`;
    let codec = codecs.get(key);
    if (!codec) codecs.set(key, (codec = createCodec(job.params.algo, job.params.level)));
    size = compressBlocks(codec, job.params, new Uint8Array(job.input, 0, job.inputLength), new Uint8Array(job.output), new Uint32Array(job.lengths));
  } catch (e) {
    error = (e as Error).message;
  }
  const done: CompressDone = { id: job.id, input: job.input, inputLength: job.inputLength, output: job.output, lengths: job.lengths, size, error };
  parentPort!.postMessage(done, [job.input, job.output, job.lengths]);
});

parentPort!.postMessage({ ready: true } satisfies CompressReady);
