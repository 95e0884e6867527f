/**
 * How an image carries its trees (docs/format.md §7.4): each layer descriptor names its
 * tree's root, chunk size, digest and size in annotations (so the manifest digest covers
 * them), and one referrer artifact manifest (subject = the image manifest) lists the tree
 * blobs so registries keep them.
 */
import { InvalidReferenceError } from '../remote/errors.ts';
import { encodeJson, MediaType, sha256Digest, type Descriptor } from '../remote/manifest.ts';
import { isDigest } from '../remote/reference.ts';
import { VerityMissingError } from './errors.ts';
import { checkChunk, TreeShape } from './tree.ts';

export const VerityAnnotation = {
  version: 'io.overlaybd-ts.verity.version',
  root: 'io.overlaybd-ts.verity.root',
  chunk: 'io.overlaybd-ts.verity.chunk-size',
  tree: 'io.overlaybd-ts.verity.tree-digest',
  treeSize: 'io.overlaybd-ts.verity.tree-size',
  treeInline: 'io.overlaybd-ts.verity.tree-inline',
} as const;

/**
 * Trees up to this size also travel inline, base64 in the layer descriptor (docs/format.md
 * §7.4): opening the layer then needs no request for its tree. 4 KiB covers layers up to
 * 8 MiB at 128 KiB chunks (the small snapshots that make images of many layers) for at most
 * ~5.5 KB of manifest each, so that even 256 such layers stay far below the 4 MiB manifests
 * registries accept.
 */
export const INLINE_TREE_MAX = 4 << 10;

export const VERITY_VERSION = '1';
export const VerityMediaType = {
  artifact: 'application/vnd.overlaybd-ts.verity.v1',
  tree: 'application/vnd.overlaybd-ts.verity.tree.v1',
  empty: 'application/vnd.oci.empty.v1+json',
} as const;

export interface LayerVerity {
  root: Uint8Array;
  chunk: number;
  /** Bytes of the layer blob the tree covers. */
  size: number;
  tree: string;
  treeSize: number;
  /** The tree's bytes when the descriptor carries them (checked against `tree`). */
  inline?: Uint8Array;
}

/** The verity fields of a layer descriptor, undefined when it has none; malformed fields are an error. */
export function layerVerity(desc: Descriptor, where: string): LayerVerity | undefined {
  const a = desc.annotations ?? {};
  if (a[VerityAnnotation.root] === undefined) return undefined;
  const bad = (what: string) => new VerityMissingError(`${where}: layer ${desc.digest}: ${what}`);
  if (a[VerityAnnotation.version] !== VERITY_VERSION) throw bad(`verity version "${a[VerityAnnotation.version]}" is not ${VERITY_VERSION}`);
  const rootHex = a[VerityAnnotation.root]!;
  if (!/^sha256:[0-9a-f]{64}$/.test(rootHex)) throw bad(`verity root "${rootHex}" is not sha256:<64 hex>`);
  const chunk = Number(a[VerityAnnotation.chunk]);
  try {
    checkChunk(chunk);
  } catch {
    throw bad(`verity chunk size "${a[VerityAnnotation.chunk]}" is not a power of two from 4096 to 16 MiB`);
  }
  const tree = a[VerityAnnotation.tree] ?? '';
  if (!isDigest(tree)) throw bad(`verity tree digest "${tree}" is malformed`);
  const treeSize = Number(a[VerityAnnotation.treeSize]);
  const want = new TreeShape(desc.size, chunk).bytes;
  if (treeSize !== want) throw bad(`verity tree size "${a[VerityAnnotation.treeSize]}" should be ${want}`);
  const v: LayerVerity = { root: Buffer.from(rootHex.slice(7), 'hex'), chunk, size: desc.size, tree, treeSize };
  const text = a[VerityAnnotation.treeInline];
  if (text !== undefined) {
    const bytes = /^[A-Za-z0-9+/]*={0,2}$/.test(text) ? Buffer.from(text, 'base64') : undefined;
    if (!bytes || bytes.length !== treeSize || sha256Digest(bytes) !== tree) throw bad(`the inline verity tree is not the ${treeSize}-byte tree ${tree}`);
    v.inline = bytes;
  }
  return v;
}

/** `desc` with the verity annotations of its tree added (other annotations kept); `v.inline` is carried when given. */
export function withVerity(desc: Descriptor, v: Omit<LayerVerity, 'size'>): Descriptor {
  // A tree inline from before is another tree's: it goes, or is replaced.
  const kept = { ...desc.annotations };
  delete kept[VerityAnnotation.treeInline];
  return {
    ...desc,
    annotations: {
      ...kept,
      [VerityAnnotation.version]: VERITY_VERSION,
      [VerityAnnotation.root]: 'sha256:' + Buffer.from(v.root).toString('hex'),
      [VerityAnnotation.chunk]: String(v.chunk),
      [VerityAnnotation.tree]: v.tree,
      [VerityAnnotation.treeSize]: String(v.treeSize),
      ...(v.inline ? { [VerityAnnotation.treeInline]: Buffer.from(v.inline).toString('base64') } : {}),
    },
  };
}

/** The tree blob descriptors of an image manifest's layers (deduplicated). */
export function treeDescriptors(layers: readonly Descriptor[], where: string): Descriptor[] {
  const seen = new Map<string, Descriptor>();
  for (const l of layers) {
    const v = layerVerity(l, where);
    if (v && !seen.has(v.tree)) seen.set(v.tree, { mediaType: VerityMediaType.tree, digest: v.tree, size: v.treeSize });
  }
  return [...seen.values()];
}

export const EMPTY_CONFIG = Buffer.from('{}');

/** The tag registries without the referrers API keep a referrer under (OCI distribution spec). */
export function referrersTag(digest: string): string {
  if (!isDigest(digest)) throw new InvalidReferenceError(`${digest} is not a digest`);
  return digest.replace(':', '-');
}

/** The referrer artifact manifest listing `trees` for the image manifest `subject`. */
export function verityArtifact(subject: Descriptor, trees: readonly Descriptor[]): Uint8Array {
  return encodeJson({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    artifactType: VerityMediaType.artifact,
    config: { mediaType: VerityMediaType.empty, digest: sha256Digest(EMPTY_CONFIG), size: EMPTY_CONFIG.length },
    layers: trees,
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
  });
}
