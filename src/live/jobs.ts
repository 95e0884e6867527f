/**
 * The background half of a live snapshot (docs/control-api.md §3, step 5): committing a
 * sealed upper into a layer file and pushing the image. Both take only what crosses a
 * thread boundary (paths, uuids, plain options) and open everything they read themselves,
 * so they run on the snapshot thread (background-worker.ts) while the serving thread only
 * switches and records. Every byte they move goes through one pacer, whose abort signal
 * is also how a stopping server cancels them.
 */
import { commitTemp } from '../io/atomic.ts';
import { ClosedError } from '../io/errors.ts';
import { PacedSource, Pacer, pacedSink } from '../io/pace.ts';
import { FileSink } from '../io/sink.ts';
import { commitWritable } from '../lsmt/commit.ts';
import { WritableLayer } from '../lsmt/writable.ts';
import type { PushOptions, PushResult } from '../image/push.ts';

/** Push settings that cross to the snapshot thread (no callbacks, no open objects). */
export type PlainPushOptions = Omit<PushOptions, 'append' | 'base' | 'checkBase' | 'onLayer' | 'onProgress' | 'onRetry' | 'credentials' | 'readThrough' | 'signal'>;

export interface CommitJob {
  /** The sealed upper: flushed, taking no more writes. */
  data: string;
  index: string;
  /** Written here, then renamed to `file` once whole and synced. */
  tmp: string;
  file: string;
  uuid: string;
  parentUuid: string;
  tag?: string;
  compress?: 'lz4' | 'zstd';
  tar: boolean;
  /** Bytes per second of data committed (0: unlimited). */
  rate: number;
}

export interface CommitJobResult {
  /** Bytes of the layer file. */
  fileBytes: number;
  /** Live data bytes it holds. */
  dataBytes: number;
}

export interface PushJob {
  /** Committed layer files, bottom → top. */
  files: string[];
  ref: string;
  options: PlainPushOptions;
  /** The push recorded last: when it holds every file but the newest, the new image goes on top of it. */
  last?: { reference: string; digests: string[] };
  /** Bytes per second hashed and uploaded (0: unlimited). */
  rate: number;
}

export interface Jobs {
  commit: { job: CommitJob; result: CommitJobResult };
  push: { job: PushJob; result: PushResult };
}

/** Why a job stopped early: the server is stopping. */
export function cancelled(): ClosedError {
  return new ClosedError('snapshot cancelled: the server is stopping (the sealed layer stays in the stack, and the next snapshot commits it)');
}

/** Commits the sealed upper into `job.file` (atomically: through `job.tmp`). */
export async function commitJob(job: CommitJob, signal?: AbortSignal): Promise<CommitJobResult> {
  const pacer = new Pacer(job.rate, signal);
  const rw = await WritableLayer.open(job.data, job.index, { readOnly: true, allowWriter: true });
  try {
    const id = { uuid: job.uuid, parentUuid: job.parentUuid, userTag: job.tag };
    // Synchronous writes: this thread has nothing else to do, and its file I/O must not queue
    // in the process's thread pool ahead of the serving thread's.
    const file = await FileSink.create(job.tmp, { blocking: true });
    let fileBytes: number;
    let dataBytes: number;
    if (!job.compress) {
      try {
        dataBytes = (await commitWritable(rw, pacedSink(file, pacer), id)).dataBytes;
        fileBytes = file.position;
      } finally {
        await file.close();
      }
    } else {
      const { ZFileWriter } = await import('../zfile/writer.ts');
      const zw = await ZFileWriter.open(file, { algorithm: job.compress, crc: true, overwriteHeader: true, tar: job.tar });
      try {
        dataBytes = (await commitWritable(rw, pacedSink(zw, pacer), id)).dataBytes;
        fileBytes = (await zw.finish()).outputSize;
      } catch (e) {
        await zw.abort();
        throw e;
      }
    }
    signal?.throwIfAborted();
    await commitTemp(job.tmp, job.file);
    return { fileBytes, dataBytes };
  } finally {
    await rw.close();
  }
}

/**
 * Pushes `job.files` to `job.ref`. When the last push holds every file but the newest, and
 * the registry still has that image with the same layers, the new image is that one plus the
 * new layer: nothing else is read or uploaded. Otherwise every file is prepared (layers
 * already there are skipped).
 */
export async function pushJob(job: PushJob, signal?: AbortSignal): Promise<PushResult> {
  const [{ pushImage, sameRepository }, { resolveReference }, { RemoteNotFoundError }] = await Promise.all([
    import('../image/push.ts'),
    import('../remote/reference.ts'),
    import('../remote/errors.ts'),
  ]);
  const pacer = new Pacer(job.rate, signal);
  const opts: PushOptions = { ...job.options, signal, readThrough: (blob) => new PacedSource(blob, pacer) };
  const { files, last } = job;
  const target = await resolveReference(job.ref);
  const onto = last && last.digests.length === files.length - 1 && sameRepository(await resolveReference(last.reference), target) ? last.reference : undefined;
  if (onto) {
    const stale = new Error('the image pushed last has other layers now');
    try {
      return await pushImage(files.slice(-1), job.ref, {
        ...opts,
        base: onto,
        checkBase: async ({ layers }) => {
          if (layers.length !== last!.digests.length || layers.some((d, i) => d.digest !== last!.digests[i])) throw stale;
        },
      });
    } catch (e) {
      if (e !== stale && !(e instanceof RemoteNotFoundError)) throw e;
    }
  }
  return pushImage(files, job.ref, opts);
}
