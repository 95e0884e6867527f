/**
 * Layer blobs another tool recompressed. `skopeo copy … oci:DIR` gzips every layer by default
 * (and drops the layer annotations), so the blob is a gzip or zstd stream around the tar that
 * held the overlaybd layer. Such a blob cannot be read at random offsets; it is recognised by
 * its magic and refused with the cause and the way to copy the image so that it stays servable.
 */
import { FormatError } from '../io/errors.ts';

export type StreamCompression = 'gzip' | 'zstd';

/** The whole-stream compression `head` starts with (RFC 1952 gzip, RFC 8878 zstd frame), if any. */
export function sniffStreamCompression(head: Uint8Array): StreamCompression | undefined {
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  return undefined;
}

/** A layer blob that is a gzip/zstd-compressed stream rather than an overlaybd layer. */
export class RecompressedLayerError extends FormatError {
  readonly compression: StreamCompression;
  constructor(file: string, compression: StreamCompression) {
    super(
      file,
      `the layer blob is a ${compression}-compressed tar, not an overlaybd layer: a tool recompressed it ` +
        `(skopeo copy into oci:DIR gzips layers by default). Copy the image again keeping its layers as they are, ` +
        `e.g. skopeo copy --preserve-digests docker://HOST/REPO:TAG oci:DIR:TAG (or --dest-oci-accept-uncompressed-layers)`,
      0,
    );
    this.compression = compression;
  }
}
