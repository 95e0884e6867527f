/**
 * Opening a layer for verified lazy reads (docs/format.md §7.3): the blob's fetches go
 * through a VerifyingSource and its chunk store through a VerifiedStore, both checking
 * against the tree the layer descriptor names.
 */
import { MemorySource } from '../io/memory.ts';
import type { ByteSource } from '../io/types.ts';
import type { ChunkStore } from '../remote/lazy-source.ts';
import type { Descriptor } from '../remote/manifest.ts';
import type { Repository } from '../remote/store.ts';
import { layerVerity, type LayerVerity } from './annotations.ts';
import { VerityMissingError } from './errors.ts';
import { VerifiedStore, VerifyingSource } from './source.ts';
import { TreeVerifier } from './verifier.ts';

export interface VerityOpenOptions {
  /** Refuse layers without a tree (`--require-verity`). */
  requireVerity?: boolean;
  /** Fetches of a chunk or tree page before a mismatch is an error (default 3). */
  attempts?: number;
}

/** The layer's tree, or a VerityMissingError (`--require-verity`). */
export function requireTree(desc: Descriptor, where: string): LayerVerity {
  const v = layerVerity(desc, where);
  if (!v) throw new VerityMissingError(`${where}: layer ${desc.digest} has no verity tree (--require-verity)`);
  return v;
}

/**
 * Wraps a remote layer's blob and store when its descriptor carries a tree; returns them
 * unchanged otherwise. `direct` is the same repository reached without the proxy, for retries.
 */
export async function verifyLayer(
  repo: Repository,
  desc: Descriptor,
  blob: ByteSource,
  store: ChunkStore | undefined,
  opts: VerityOpenOptions & { direct?: Repository } = {},
): Promise<{ blob: ByteSource; store: ChunkStore | undefined; verifier: TreeVerifier | undefined }> {
  const v = opts.requireVerity ? requireTree(desc, repo.name) : layerVerity(desc, repo.name);
  if (!v) return { blob, store, verifier: undefined };
  const direct = opts.direct;
  // An inline tree (checked against its digest) needs no request, nor a second source to retry.
  const tree = v.inline ? new MemorySource(v.inline, `${repo.name}@${v.tree} (inline in the manifest)`) : await repo.openBlob(v.tree, v.treeSize);
  const retry = !v.inline && direct ? await direct.openBlob(v.tree, v.treeSize) : undefined;
  const verifier = new TreeVerifier(v, tree, { retry, attempts: opts.attempts });
  // Opening the layer reads its first chunk: that leaf page and the upper pages every read needs go out now.
  void verifier.prepare(0, 0);
  const blobRetry = direct ? await direct.openBlob(desc.digest, desc.size) : undefined;
  return {
    blob: new VerifyingSource(blob, verifier, { retry: blobRetry, attempts: opts.attempts, via: direct ? { inner: 'through the proxy', retry: 'directly' } : undefined }),
    store: store && new VerifiedStore(store, verifier),
    verifier,
  };
}
