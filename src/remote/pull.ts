/**
 * Pulling: an image's blobs into a plain directory (resumable, digests verified) with a
 * config.v1.json that `obd serve` opens directly; or a copy between any two repositories
 * (registry ↔ OCI layout ↔ registry), mounting across repositories of one registry.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { downloadBlob } from './download.ts';
import { openRepository, resolveImage, type RemoteOptions } from './image.ts';
import type { Descriptor } from './manifest.ts';
import { formatReference, referenceTarget, resolveReference, DEFAULT_TAG, type ImageReference } from './reference.ts';
import type { PutBlobResult } from './store.ts';
import { treeDescriptors } from '../verity/annotations.ts';
import { publishReferrer } from '../verity/publish.ts';

export interface PullOptions extends RemoteOptions {
  /** Blobs downloaded at once (default 3). */
  concurrency?: number;
  /** Called with bytes done (including bytes already present from an earlier try) and the total. */
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface DownloadResult {
  reference: string;
  digest: string;
  /** The directory the blobs and manifest.json were written under (absolute). */
  root: string;
  layers: Array<{ digest: string; size: number; file: string; fetched: boolean }>;
}

async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

/**
 * Downloads `ref` into `dir`: blobs/sha256/<hex> (layers, config) and manifest.json, each file
 * appearing only when complete. Runs again after an interruption continue where they stopped.
 * (src/image/pull.ts adds the config.v1.json that `obd serve` opens.)
 */
export async function downloadImage(ref: string | ImageReference, dir: string, opts: PullOptions = {}): Promise<DownloadResult> {
  const r = await resolveReference(ref);
  const opened = await openRepository(r, opts);
  try {
    const repo = opened.repo;
    const img = await resolveImage(repo, referenceTarget(r), opts.platform);
    const root = path.resolve(dir);
    const blobs = path.join(root, 'blobs', 'sha256');
    await mkdir(blobs, { recursive: true });
    const all: Descriptor[] = [img.manifest.config, ...img.manifest.layers];
    const total = all.reduce((a, d) => a + d.size, 0);
    const done = new Map<string, number>();
    const report = () => opts.onProgress?.([...done.values()].reduce((a, b) => a + b, 0), total);
    const fetched = new Map<string, boolean>();
    const fileOf = (d: Descriptor) => path.join(blobs, d.digest.split(':')[1]!);
    await inParallel(all, opts.concurrency ?? 3, async (d) => {
      const got = await downloadBlob(repo, d.digest, d.size, fileOf(d), {
        signal: opts.signal,
        onProgress: (n) => {
          done.set(d.digest, n);
          report();
        },
      });
      done.set(d.digest, d.size);
      fetched.set(d.digest, got);
      report();
    });
    await writeFileAtomic(path.join(root, 'manifest.json'), img.raw.bytes);
    const layers = img.manifest.layers.map((d) => ({ digest: d.digest, size: d.size, file: fileOf(d), fetched: fetched.get(d.digest) ?? false }));
    return { reference: formatReference(r), digest: img.digest, root, layers };
  } finally {
    await opened.close();
  }
}

export interface CopyResult {
  source: string;
  target: string;
  digest: string;
  blobs: Array<{ digest: string; size: number; result: PutBlobResult }>;
}

/**
 * Copies one image (the platform's manifest, its config and layers) from `src` to `dst`,
 * tagging it with the target's tag (`latest` when it names none, as push does). The source
 * is resolved before the target is opened, and a layout the copy created is removed again
 * when the copy fails.
 */
export async function copyImage(src: string | ImageReference, dst: string | ImageReference, opts: PullOptions & { mountFrom?: string[] } = {}): Promise<CopyResult> {
  const s = await resolveReference(src);
  const t = await resolveReference(dst);
  const from = await openRepository(s, opts);
  try {
    const img = await resolveImage(from.repo, referenceTarget(s), opts.platform);
    const to = await openRepository(t, opts, true);
    try {
      const sameRegistry = s.kind === 'registry' && t.kind === 'registry' && s.host === t.host;
      const mountFrom = [...(opts.mountFrom ?? []), ...(sameRegistry ? [s.repository] : [])];
      // Verity trees travel with the layers they cover (docs/format.md §7.4).
      const all = [img.manifest.config, ...img.manifest.layers, ...treeDescriptors(img.manifest.layers, from.repo.name)];
      const total = all.reduce((a, d) => a + d.size, 0);
      let before = 0;
      const blobs: CopyResult['blobs'] = [];
      for (const d of all) {
        const onProgress = (n: number) => opts.onProgress?.(before + n, total);
        const file = to.repo.blobPath?.(d.digest);
        if (file) {
          // Into blob files (a layout): one streamed, resumable, digest-checked download per blob.
          const fetched = await downloadBlob(from.repo, d.digest, d.size, file, { signal: opts.signal, onProgress });
          blobs.push({ digest: d.digest, size: d.size, result: fetched ? 'uploaded' : 'exists' });
        } else {
          const blob = await from.repo.openBlob(d.digest, d.size);
          try {
            blobs.push({ digest: d.digest, size: d.size, result: await to.repo.putBlob(d.digest, blob, { mountFrom, onProgress }) });
          } finally {
            await blob.close();
          }
        }
        before += d.size;
        opts.onProgress?.(before, total);
      }
      const tag = t.tag ?? (t.digest ? undefined : DEFAULT_TAG);
      const digest = await to.repo.putManifest(img.raw.bytes, img.raw.mediaType, tag);
      await publishReferrer(to.repo, { mediaType: img.raw.mediaType, digest, size: img.raw.bytes.length }, img.manifest.layers);
      return { source: formatReference(s), target: formatReference(t), digest, blobs };
    } catch (e) {
      await to.abandon();
      throw e;
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}
