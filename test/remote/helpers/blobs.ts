/** Small helpers shared by the remote tests: deterministic blobs. */
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
