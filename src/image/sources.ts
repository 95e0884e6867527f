/**
 * One entry point for `obd serve` and friends: a config.v1.json path, an `oci:DIR[:tag]`
 * or a registry reference → the image's outer layer sources bottom → top (to be peeled
 * tar → zfile → LSMT and stacked by open.ts), plus the upper and trace settings.
 */
import type { ByteSource } from '../io/types.ts';
import { openImageConfig, type DownloadConfig } from './config.ts';
import { startBackgroundDownload } from '../remote/download.ts';
import { openRemoteImage, type LazyOptions, type RemoteOptions } from '../remote/image.ts';
import type { LazySource } from '../remote/lazy-source.ts';
import { sharedBlobOf, type SharedBlob } from '../io/shared.ts';
import { locateImage } from './open.ts';

export interface ImageSources {
  /** What was opened (the config path or the normalised reference). */
  name: string;
  /** Outer layer blobs, bottom → top. */
  layers: ByteSource[];
  /** Writable layer files from a config (serve adds its own for a reference). */
  upper: { index: string; data: string } | undefined;
  /** Trace to record (empty file) or replay (see trace.ts `traceMode`). */
  tracePath: string | undefined;
  /** Writes the config's resultFile ("success" / "failed:<reason>"); a no-op otherwise. */
  reportResult(error?: unknown): Promise<void>;
  /**
   * Starts background downloads: for a config, of remote lowers with a `dir` (per its
   * `download` section, overridable); for a reference, of every lazy layer into the disk
   * cache (needs a cache dir). Rate in MiB/s, delay in seconds.
   */
  startDownloads(opts?: DownloadConfig): { done: Promise<void>; stop(): Promise<void> } | undefined;
  close(): Promise<void>;
}

export async function openImageSources(spec: string, opts: RemoteOptions & LazyOptions = {}): Promise<ImageSources> {
  return (await locateImage([spec])).kind === 'config' ? configSources(spec, opts) : referenceSources(spec, opts);
}

/** The sources a config.v1.json names (local or remote lowers, its upper, trace and result file). */
export async function configSources(path: string, opts: RemoteOptions & LazyOptions = {}): Promise<ImageSources> {
  const c = await openImageConfig(path, opts);
  return { name: c.path, layers: c.layers, upper: c.upper, tracePath: c.tracePath, reportResult: (e) => c.reportResult(e), startDownloads: (o) => c.startDownloads(o), close: () => c.close() };
}

/** The layer blobs of an image reference (registry, oci:DIR, oci-archive:FILE, layout path), read lazily. */
export async function referenceSources(spec: string, opts: RemoteOptions & LazyOptions = {}): Promise<ImageSources> {
  const img = await openRemoteImage(spec, opts);
  let downloads: { stop(): Promise<void> } | undefined;
  const mine: SharedBlob[] = [];
  return {
    name: `${img.reference}@${img.digest}`,
    layers: img.layers,
    upper: undefined,
    tracePath: undefined,
    async reportResult() {},
    startDownloads(o: DownloadConfig = {}) {
      // A layer shared with another export is downloaded once, by whichever asked first.
      const shared = (lazy: LazySource) => sharedBlobOf(img.layers[img.blobs.indexOf(lazy)]!);
      const items = img.lazy
        .filter((l) => l.store.disk && !shared(l)?.downloading)
        .map((lazy, i) => ({ lazy, repo: img.repo, digest: img.manifest.layers[img.blobs.indexOf(lazy)]?.digest ?? String(i) }));
      for (const { lazy } of items) {
        const b = shared(lazy);
        if (b) {
          b.downloading = true;
          mine.push(b);
        }
      }
      if (items.length === 0) return undefined;
      const handle = startBackgroundDownload(items, { delayMs: (o.delay ?? 0) * 1000, maxBytesPerSec: (o.maxMBps ?? 100) * 2 ** 20, tries: o.tryCnt ?? 5 });
      downloads = handle;
      return handle;
    },
    async close() {
      await downloads?.stop();
      // Stopped with this image: another export holding these layers may start them again.
      for (const b of mine) b.downloading = false;
      await img.close();
    },
  };
}
