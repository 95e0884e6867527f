/**
 * `obd pull`: an image downloaded into a directory (src/remote/pull.ts) plus the
 * config.v1.json that `obd serve` opens directly, its lowers bottom → top with absolute
 * `file` paths, digest and size (docs/format.md §4.1), written last so that it appears only
 * when every blob it names is complete.
 */
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { downloadImage, type DownloadResult, type PullOptions } from '../remote/pull.ts';
import type { ImageReference } from '../remote/reference.ts';
import type { ImageConfigV1 } from './config.ts';

export interface PullResult extends Omit<DownloadResult, 'root'> {
  /** The config.v1.json written for `obd serve`. */
  configPath: string;
}

export async function pullImage(ref: string | ImageReference, dir: string, opts: PullOptions = {}): Promise<PullResult> {
  const { root, ...got } = await downloadImage(ref, dir, opts);
  const configPath = path.join(root, 'config.v1.json');
  const config: ImageConfigV1 = { lowers: got.layers.map((l) => ({ file: l.file, digest: l.digest, size: l.size })), resultFile: '' };
  await writeFileAtomic(configPath, JSON.stringify(config, null, 2) + '\n');
  return { ...got, configPath };
}
