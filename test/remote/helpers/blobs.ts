/** Small helpers shared by the remote tests: deterministic blobs and temp dirs. */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MemorySource } from '../../../src/io/memory.ts';
import { sha256Digest } from '../../../src/remote/manifest.ts';
import { R } from '../../helpers/recipes.ts';

export interface TestBlob {
  bytes: Buffer;
  digest: string;
  source(): MemorySource;
}

export function blob(label: string, size: number): TestBlob {
  const bytes = R(label, size);
  return { bytes, digest: sha256Digest(bytes), source: () => new MemorySource(bytes, label) };
}

export async function tempDir(t: { after(fn: () => Promise<void>): void }, prefix = 'obd-remote-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
