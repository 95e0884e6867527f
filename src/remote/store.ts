/**
 * What a place holding images offers: a registry repository and an OCI image-layout
 * directory both implement it, so push, pull and serve do not care which one they talk to.
 */
import type { ByteSource } from '../io/types.ts';
import type { FetchedManifest } from './manifest.ts';

export type PutBlobResult = 'exists' | 'mounted' | 'uploaded';

export interface PutBlobOptions {
  /** Other repositories of the same registry to mount the blob from instead of uploading. */
  mountFrom?: readonly string[];
  /** Called with the bytes sent so far. */
  onProgress?: (sent: number) => void;
}

/**
 * Where a repository keeps its blobs, which decides how callers use it (never its class):
 * - `registry`: over the network; layers are read lazily through the cache, a download goes
 *   to a local file first, referrers are listed in a tag (docs/format.md §7.4);
 * - `layout`: files of an OCI image-layout directory, read directly (see `blobPath`);
 * - `archive`: members of an oci-archive tar file, read directly.
 */
export type RepositoryKind = 'registry' | 'layout' | 'archive';

export interface Repository {
  /** Names the repository in messages (`127.0.0.1:5000/team/app`, `oci:/path`). */
  readonly name: string;
  readonly kind: RepositoryKind;
  /**
   * Present when blobs are plain files: the file blob `digest` is (or will be) stored as, so a
   * copy can download straight into it (resumable, digest-checked, renamed into place).
   */
  blobPath?(digest: string): string;
  /** A manifest or index by tag or digest, bytes as stored. */
  getManifest(reference: string): Promise<FetchedManifest>;
  /** Stores a manifest under a tag (or its digest when `tag` is omitted); resolves its digest. */
  putManifest(bytes: Uint8Array, mediaType: string, tag?: string): Promise<string>;
  /** The size of a blob, or undefined when it is absent. */
  statBlob(digest: string): Promise<number | undefined>;
  /** Random access to a blob (uncached; each read goes to the store). */
  openBlob(digest: string, size?: number): Promise<ByteSource>;
  /** The blob's bytes from `offset` to the end as a stream. */
  streamBlob(digest: string, offset?: number): AsyncIterable<Uint8Array>;
  /** Stores `content` as blob `digest` unless it is already there (or can be mounted). */
  putBlob(digest: string, content: ByteSource, opts?: PutBlobOptions): Promise<PutBlobResult>;
  close(): Promise<void>;
}
