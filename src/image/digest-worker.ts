/**
 * Worker-thread entry: the sha256 digest of a file and, when asked, its verity tree, in one
 * read pass, at the given nice value (a serving process hashes its snapshots here, so the
 * hashing yields to the serving thread).
 */
import os from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { FileSource } from '../io/file.ts';
import { digestAndTree } from '../verity/publish.ts';

export interface DigestJob {
  file: string;
  /** Verity chunk size; none: the digest only. */
  chunk?: number;
  priority: number;
}

const job = workerData as DigestJob;
if (job.priority !== 0) {
  try {
    // Linux: pid 0 means this thread only.
    os.setPriority(0, job.priority);
  } catch {
    // Not permitted: hash at the caller's priority.
  }
}
const src = await FileSource.open(job.file);
try {
  parentPort!.postMessage(await digestAndTree(src, job.chunk));
} finally {
  await src.close();
}
