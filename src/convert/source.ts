/**
 * The image being converted: its manifest (an index resolved to the platform), its config and
 * diffIDs, and each layer as the stream of its uncompressed tar, checked as it is read: the
 * blob against its descriptor's digest and size, the tar against the config's diffID.
 */
import { Annotation, MediaType, type Descriptor, type FetchedManifest, type ImageManifest } from '../remote/manifest.ts';
import { DigestMismatchError } from '../remote/errors.ts';
import { openRepository, resolveImage, type RemoteOptions } from '../remote/image.ts';
import { formatReference, referenceTarget, type ImageReference } from '../remote/reference.ts';
import type { Repository } from '../remote/store.ts';
import { decompressed } from '../tar/decompress.ts';
import { configDiffIds } from './config.ts';
import { DiffIdMismatchError, ImageConfigError, UnsupportedLayerError } from './pipeline-errors.ts';
import { HashedStream } from './hashed.ts';

/** Layer media types read (compression is found by magic; these say it is a tar). */
const LAYER_TYPES: ReadonlySet<string> = new Set(
  ['application/vnd.oci.image.layer.v1.tar', 'application/vnd.oci.image.layer.nondistributable.v1.tar', MediaType.dockerLayer, 'application/vnd.docker.image.rootfs.foreign.diff.tar'].flatMap((t) =>
    t.startsWith('application/vnd.oci') ? [t, `${t}+gzip`, `${t}+zstd`] : [t, `${t}.gzip`, `${t}.zstd`],
  ),
);
const CONFIG_TYPES: ReadonlySet<string> = new Set([MediaType.ociConfig, MediaType.dockerConfig]);

export interface SourceImage {
  /** The reference, normalised. */
  reference: string;
  repo: Repository;
  /** The image manifest's digest (after an index). */
  digest: string;
  manifest: ImageManifest;
  raw: FetchedManifest;
  /** The config blob as stored. */
  config: Uint8Array;
  diffIds: string[];
  /** Docker v2 schema 2 rather than OCI: the output keeps the family. */
  docker: boolean;
  close(): Promise<void>;
}

/** Opens and checks the source image: every layer a tar, the config's diffIDs one per layer. */
export async function openSource(ref: ImageReference, opts: RemoteOptions): Promise<SourceImage> {
  const opened = await openRepository(ref, opts);
  try {
    const name = formatReference(ref);
    const img = await resolveImage(opened.repo, referenceTarget(ref), opts.platform);
    const m = img.manifest;
    if (!CONFIG_TYPES.has(m.config.mediaType)) throw new ImageConfigError(`${name} config ${m.config.digest}`, `has media type ${m.config.mediaType}, not an image config (${[...CONFIG_TYPES].join(', ')})`);
    if (m.layers.length === 0) throw new ImageConfigError(`${name} ${img.digest}`, 'belongs to an image without layers: there is no filesystem to convert');
    m.layers.forEach((l, i) => checkLayer(l, i, name));
    const config = await readConfig(opened.repo, m.config);
    const diffIds = configDiffIds(config, m.layers.length, `${name} config ${m.config.digest}`);
    return { reference: name, repo: opened.repo, digest: img.digest, manifest: m, raw: img.raw, config, diffIds, docker: img.raw.mediaType === MediaType.dockerManifest, close: () => opened.close() };
  } catch (e) {
    await opened.close();
    throw e;
  }
}

function checkLayer(l: Descriptor, i: number, name: string): void {
  if (l.annotations?.[Annotation.blobDigest] !== undefined) throw new UnsupportedLayerError(name, i, `is already an overlaybd layer (annotation ${Annotation.blobDigest}); convert the OCI image it was made from`);
  if (!LAYER_TYPES.has(l.mediaType)) throw new UnsupportedLayerError(name, i, `media type ${l.mediaType} is not a tar layer (plain, gzip or zstd)`);
}

async function readConfig(repo: Repository, d: Descriptor): Promise<Uint8Array> {
  if (d.size > 16 << 20) throw new ImageConfigError(`${repo.name} config ${d.digest}`, `is ${d.size} bytes, more than the 16 MiB read`);
  const parts: Uint8Array[] = [];
  const hashed = new HashedStream(repo.streamBlob(d.digest));
  for await (const c of hashed) parts.push(c);
  const digest = await hashed.finish();
  if (digest !== d.digest || hashed.bytes !== d.size) throw new DigestMismatchError(`${repo.name} config`, `${d.digest} (${d.size} bytes)`, `${digest} (${hashed.bytes} bytes)`);
  return Buffer.concat(parts);
}

export interface LayerStream {
  /** The uncompressed tar. */
  tar: AsyncIterable<Uint8Array>;
  /** Reads what the consumer left and checks the blob digest and the diffID; resolves the tar's size. */
  verify(): Promise<number>;
  /** Stops reading (after a failure). */
  close(): Promise<void>;
}

/** Layer `i` of `src` as its tar, verified by `verify()`; `onBytes` counts blob bytes read. */
export function layerStream(src: SourceImage, i: number, onBytes?: (n: number) => void): LayerStream {
  const d = src.manifest.layers[i]!;
  const diffId = src.diffIds[i]!;
  const where = `${src.reference} layer ${i} (${d.digest})`;
  const blob = new HashedStream(src.repo.streamBlob(d.digest), onBytes);
  // A plain tar is its own diffID: one hash covers both.
  const plain = d.digest === diffId;
  const tar = plain ? blob : new HashedStream(decompressed(blob, { name: where }));
  return {
    tar,
    async verify() {
      const tarDigest = await tar.finish();
      const blobDigest = plain ? tarDigest : await blob.finish();
      if (blobDigest !== d.digest || blob.bytes !== d.size) throw new DigestMismatchError(where, `${d.digest} (${d.size} bytes)`, `${blobDigest} (${blob.bytes} bytes)`);
      if (tarDigest !== diffId) throw new DiffIdMismatchError(where, i, diffId, tarDigest, tar.bytes);
      return tar.bytes;
    },
    async close() {
      await tar.close();
      await blob.close();
    },
  };
}
