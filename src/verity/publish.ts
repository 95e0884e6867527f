/**
 * Publishing trees (docs/format.md §7.4): a blob's tree (with its digest in the same read
 * pass, for checks), tree blobs uploaded next to the layers, the layer descriptors
 * annotated, and after the image manifest a referrer artifact listing the trees, reachable
 * through the OCI referrers tag `sha256-<hex>` (an index) so registries keep the tree blobs.
 */
import { createHash } from 'node:crypto';
import { FormatError } from '../io/errors.ts';
import { MemorySource } from '../io/memory.ts';
import type { ByteSource } from '../io/types.ts';
import { RemoteNotFoundError } from '../remote/errors.ts';
import { encodeJson, isIndex, MediaType, parseIndex, sha256Digest, type Descriptor } from '../remote/manifest.ts';
import type { Repository } from '../remote/store.ts';
import { EMPTY_CONFIG, INLINE_TREE_MAX, referrersTag, treeDescriptors, verityArtifact, VerityMediaType, withVerity } from './annotations.ts';
import { DEFAULT_CHUNK, TreeBuilder } from './tree.ts';

export interface BuiltTree {
  root: Uint8Array;
  chunk: number;
  bytes: Uint8Array;
  digest: string;
}

/** Builds the tree of bytes fed in order; `finish` gives the tree blob with its digest. */
export class TreeHasher {
  readonly #builder: TreeBuilder;
  constructor(chunk = DEFAULT_CHUNK, expectedSize = 0) {
    this.#builder = new TreeBuilder(chunk, expectedSize);
  }
  update(bytes: Uint8Array): void {
    this.#builder.update(bytes);
  }
  finish(): BuiltTree {
    const { tree, root, shape } = this.#builder.finish();
    return { root, chunk: shape.chunk, bytes: tree, digest: sha256Digest(tree) };
  }
}

/** Feeds a whole source to `sink` in order, 1 MiB at a time. */
async function feed(src: ByteSource, sink: (piece: Uint8Array) => void, onProgress?: (done: number) => void): Promise<void> {
  const buf = new Uint8Array(1 << 20);
  for (let pos = 0; pos < src.size; ) {
    const n = await src.read(buf, pos);
    if (n === 0) throw new FormatError(src.name, `ended at ${pos} of ${src.size} bytes`, pos);
    sink(buf.subarray(0, n));
    pos += n;
    onProgress?.(pos);
  }
}

/** The verity tree of a whole source. */
export async function buildTree(src: ByteSource, chunk = DEFAULT_CHUNK): Promise<BuiltTree> {
  const tree = new TreeHasher(chunk, src.size);
  await feed(src, (p) => tree.update(p));
  return tree.finish();
}

/** sha256 digest of a whole source and, when `chunk` is given, its verity tree: one read pass. */
export async function digestAndTree(src: ByteSource, chunk: number | undefined, onProgress?: (done: number) => void): Promise<{ digest: string; tree: BuiltTree | undefined }> {
  const hash = createHash('sha256');
  const tree = chunk === undefined ? undefined : new TreeHasher(chunk, src.size);
  await feed(
    src,
    (p) => {
      hash.update(p);
      tree?.update(p);
    },
    onProgress,
  );
  return { digest: 'sha256:' + hash.digest('hex'), tree: tree?.finish() };
}

/** Uploads a tree blob and returns `layer` annotated with it. */
export async function publishTree(repo: Repository, layer: Descriptor, tree: BuiltTree): Promise<Descriptor> {
  await repo.putBlob(tree.digest, new MemorySource(tree.bytes, `verity tree of ${layer.digest}`));
  const inline = tree.bytes.length <= INLINE_TREE_MAX ? tree.bytes : undefined;
  return withVerity(layer, { root: tree.root, chunk: tree.chunk, tree: tree.digest, treeSize: tree.bytes.length, inline });
}

/** Uploads the referrer artifact's empty config (a push starts it early, off the critical path). */
export function publishEmptyConfig(repo: Repository): Promise<unknown> {
  return repo.putBlob(sha256Digest(EMPTY_CONFIG), new MemorySource(EMPTY_CONFIG, 'empty config'));
}

/**
 * Pushes the referrer artifact for the image manifest `subject` (when its layers carry
 * trees) and records it in the referrers tag index, replacing earlier verity artifacts.
 * Resolves the artifact's digest, or undefined when no layer has a tree.
 */
export async function publishReferrer(repo: Repository, subject: Descriptor, layers: readonly Descriptor[]): Promise<string | undefined> {
  const trees = treeDescriptors(layers, repo.name);
  if (trees.length === 0) return undefined;
  const artifact = verityArtifact(subject, trees);
  // A layout keeps every blob and its readers take a lone index.json entry as the image:
  // the artifact is stored there, not listed.
  if (repo.kind !== 'registry') return publishEmptyConfig(repo).then(() => repo.putManifest(artifact, MediaType.ociManifest));
  const tag = referrersTag(subject.digest);
  // The artifact (after its config: registries check a manifest's blobs) while the tag index is read.
  const [digest, old] = await Promise.all([
    publishEmptyConfig(repo).then(() => repo.putManifest(artifact, MediaType.ociManifest)),
    repo.getManifest(tag).catch((e: unknown) => {
      if (e instanceof RemoteNotFoundError) return undefined;
      throw e;
    }),
  ]);
  const others = old && isIndex(old) ? parseIndex(old, repo.name).manifests.filter((d) => (d as { artifactType?: string }).artifactType !== VerityMediaType.artifact) : [];
  const index = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [...others, { mediaType: MediaType.ociManifest, digest, size: artifact.length, artifactType: VerityMediaType.artifact }] };
  await repo.putManifest(encodeJson(index), MediaType.ociIndex, tag);
  return digest;
}
