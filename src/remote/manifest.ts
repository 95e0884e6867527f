/**
 * OCI / Docker v2 manifests and indexes: media types, validation, platform selection, and
 * the overlaybd layer annotations.
 */
import { createHash } from 'node:crypto';
import { InvalidReferenceError } from './errors.ts';
import { isDigest } from './reference.ts';

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
} as const;

/** What we ask registries for, best first. */
export const MANIFEST_ACCEPT = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerList].join(', ');

export const Annotation = {
  version: 'containerd.io/snapshot/overlaybd/version',
  blobDigest: 'containerd.io/snapshot/overlaybd/blob-digest',
  blobSize: 'containerd.io/snapshot/overlaybd/blob-size',
  fsType: 'containerd.io/snapshot/overlaybd/blob-fs-type',
  refName: 'org.opencontainers.image.ref.name',
} as const;
export const OVERLAYBD_VERSION = '0.1.0';

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

/** Raw manifest bytes as stored, with the digest they are addressed by. */
export interface FetchedManifest {
  mediaType: string;
  digest: string;
  bytes: Uint8Array;
}

export function sha256Digest(bytes: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex');
}

export function isIndex(m: FetchedManifest): boolean {
  return m.mediaType === MediaType.ociIndex || m.mediaType === MediaType.dockerList;
}

export function checkDescriptor(d: unknown, where: string): Descriptor {
  const x = d as Descriptor;
  if (!x || typeof x.mediaType !== 'string' || typeof x.digest !== 'string' || !isDigest(x.digest) || !Number.isSafeInteger(x.size) || x.size < 0) {
    throw new InvalidReferenceError(`${where}: malformed descriptor ${JSON.stringify(d)?.slice(0, 200)}`);
  }
  return x;
}

function parseJson(m: FetchedManifest, name: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(m.bytes).toString('utf8'));
  } catch (e) {
    throw new InvalidReferenceError(`${name}: manifest ${m.digest} is not JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null) throw new InvalidReferenceError(`${name}: manifest ${m.digest} is not JSON: not an object`);
  return doc as Record<string, unknown>;
}

/** The media type a manifest declares, or that its shape implies. */
export function sniffMediaType(bytes: Uint8Array, fallback: string): string {
  try {
    const doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
    if (typeof doc.mediaType === 'string') return doc.mediaType;
    if (Array.isArray(doc.manifests)) return MediaType.ociIndex;
    if (Array.isArray(doc.layers)) return MediaType.ociManifest;
  } catch {
    // falls through to the server's word
  }
  return fallback;
}

export function parseManifest(m: FetchedManifest, name: string): ImageManifest {
  const doc = parseJson(m, name);
  if (doc.schemaVersion !== 2 || !Array.isArray(doc.layers)) throw new InvalidReferenceError(`${name}: ${m.digest} is not a schema-2 image manifest (media type ${m.mediaType})`);
  const where = `${name} ${m.digest}`;
  return {
    schemaVersion: 2,
    mediaType: m.mediaType,
    config: checkDescriptor(doc.config, where),
    layers: (doc.layers as unknown[]).map((l) => checkDescriptor(l, where)),
    annotations: doc.annotations as Record<string, string> | undefined,
  };
}

export function parseIndex(m: FetchedManifest, name: string): ImageIndex {
  const doc = parseJson(m, name);
  if (!Array.isArray(doc.manifests)) throw new InvalidReferenceError(`${name}: ${m.digest} is not an image index`);
  return { schemaVersion: 2, mediaType: m.mediaType, manifests: (doc.manifests as unknown[]).map((d) => checkDescriptor(d, `${name} ${m.digest}`)) };
}

/** The platform this process runs as, in OCI spelling. */
export function hostPlatform(): Platform {
  const arch = ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' } as Record<string, string>)[process.arch] ?? process.arch;
  return { architecture: arch, os: 'linux' };
}

/** Picks the index entry for `platform` (os + architecture, and variant when asked). */
export function selectPlatform(index: ImageIndex, platform: Platform, name: string): Descriptor {
  const hit = index.manifests.find(
    (d) => d.platform && d.platform.os === platform.os && d.platform.architecture === platform.architecture && (!platform.variant || d.platform.variant === platform.variant),
  );
  if (hit) return hit;
  const only = index.manifests.filter((d) => !d.platform);
  if (only.length === 1) return only[0]!;
  const have = index.manifests.map((d) => (d.platform ? `${d.platform.os}/${d.platform.architecture}${d.platform.variant ? '/' + d.platform.variant : ''}` : '?')).join(', ');
  throw new InvalidReferenceError(`${name}: no manifest for ${platform.os}/${platform.architecture} in the index (has: ${have || 'nothing'})`);
}

export function encodeJson(doc: unknown): Uint8Array {
  return Buffer.from(JSON.stringify(doc));
}
