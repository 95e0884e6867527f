/**
 * The converted image's documents: layer descriptors as the reference convertor writes them
 * (docs/format.md §1, docs/convert.md §2: the uncompressed-tar media type of the manifest's family and
 * the overlaybd annotations, in Go's sorted key order), the manifest naming them with the
 * source's config (its diff_ids replaced, config.ts) and the source manifest's annotations.
 * Only inputs go in: no clock, no host, so the bytes are the same on every run.
 */
import { Annotation, MediaType, OVERLAYBD_VERSION, type Descriptor, type ImageManifest } from '../remote/manifest.ts';

export function layerDescriptor(digest: string, size: number, docker: boolean): Descriptor {
  return {
    mediaType: docker ? MediaType.dockerLayer : MediaType.ociLayer,
    digest,
    size,
    annotations: { [Annotation.blobDigest]: digest, [Annotation.blobSize]: String(size), [Annotation.version]: OVERLAYBD_VERSION },
  };
}

export function manifestBytes(source: ImageManifest, docker: boolean, config: Descriptor, layers: readonly Descriptor[]): Uint8Array {
  const m: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers,
  };
  if (source.annotations && Object.keys(source.annotations).length) m.annotations = source.annotations;
  return Buffer.from(JSON.stringify(m));
}
