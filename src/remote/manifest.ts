/**
 * OCI / Docker v2 manifests and indexes: media types, validation, platform selection, and
 * the overlaybd layer annotations.
 */
import { createHash } from 'node:crypto';
import { InvalidReferenceError, ManifestError } from './errors.ts';
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

/** Largest manifest or index (containerd's limit; docs/format.md §6); a bigger one is not read. */
export const MAX_MANIFEST_BYTES = 4 << 20;
/** Most layers a manifest may list: far above real images (the reference stacks at most 255). */
export const MAX_LAYERS = 4096;
/** Most entries an image index may list. */
export const MAX_INDEX_ENTRIES = 4096;

const MANIFEST_TYPES: ReadonlySet<string> = new Set([MediaType.ociManifest, MediaType.dockerManifest]);
const INDEX_TYPES: ReadonlySet<string> = new Set([MediaType.ociIndex, MediaType.dockerList]);
/** RFC 6838 type/subtype, each at most 127 characters. */
const MEDIA_TYPE = /^[A-Za-z0-9][\w!#$&^.+-]{0,126}\/[A-Za-z0-9][\w!#$&^.+-]{0,126}$/;

/** A value for an error message; never serialises untrusted structure (it may nest very deep). */
function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? v.slice(0, 80) + '…' : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : typeof v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkStringMap(v: unknown, where: string, field: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v)) throw new ManifestError(where, field, `is ${show(v)}, not a map of strings`);
  for (const [k, x] of Object.entries(v)) if (typeof x !== 'string') throw new ManifestError(where, `${field}[${JSON.stringify(k.slice(0, 80))}]`, `is ${show(x)}, not a string`);
  return v as Record<string, string>;
}

function checkDescriptor(d: unknown, where: string, field: string): Descriptor {
  if (!isObject(d)) throw new ManifestError(where, field, `is ${show(d)}, not a descriptor`);
  if (typeof d.mediaType !== 'string' || !MEDIA_TYPE.test(d.mediaType)) throw new ManifestError(where, `${field}.mediaType`, `${show(d.mediaType)} is not a media type`);
  if (typeof d.digest !== 'string' || !isDigest(d.digest)) throw new ManifestError(where, `${field}.digest`, `${show(d.digest)} is not a digest (algorithm:hex)`);
  if (!Number.isSafeInteger(d.size) || (d.size as number) < 0) throw new ManifestError(where, `${field}.size`, `${show(d.size)} is not a byte count (a whole number from 0 to 2^53-1)`);
  checkStringMap(d.annotations, where, `${field}.annotations`);
  if (d.platform !== undefined) {
    const p = d.platform;
    if (!isObject(p) || typeof p.os !== 'string' || typeof p.architecture !== 'string' || (p.variant !== undefined && typeof p.variant !== 'string')) {
      throw new ManifestError(where, `${field}.platform`, 'is not {os, architecture[, variant]} strings');
    }
  }
  return d as unknown as Descriptor;
}

function checkList(v: unknown, where: string, field: string, max: number): unknown[] {
  if (!Array.isArray(v)) throw new ManifestError(where, field, `is ${show(v)}, not a list`);
  if (v.length > max) throw new ManifestError(where, field, `has ${v.length} entries, more than the ${max} allowed`);
  return v;
}

function parseJson(m: FetchedManifest, name: string): Record<string, unknown> {
  const where = `${name} ${m.digest}`;
  if (m.bytes.length > MAX_MANIFEST_BYTES) throw new ManifestError(where, '(document)', `is ${m.bytes.length} bytes, more than the ${MAX_MANIFEST_BYTES} allowed`);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(m.bytes).toString('utf8'));
  } catch (e) {
    throw new ManifestError(where, '(document)', `is not JSON: ${(e as Error).message}`);
  }
  if (!isObject(doc)) throw new ManifestError(where, '(document)', `is ${show(doc)}, not a JSON object`);
  if (doc.schemaVersion !== 2) throw new ManifestError(where, 'schemaVersion', `is ${show(doc.schemaVersion)}, not 2`);
  return doc;
}

/** A declared media type must be one of `allowed` (a manifest need not declare one). */
function checkDeclaredType(doc: Record<string, unknown>, where: string, allowed: ReadonlySet<string>, what: string): void {
  if (doc.mediaType !== undefined && (typeof doc.mediaType !== 'string' || !allowed.has(doc.mediaType))) {
    throw new ManifestError(where, 'mediaType', `${show(doc.mediaType)} is not an ${what} media type (${[...allowed].join(', ')})`);
  }
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
  const where = `${name} ${m.digest}`;
  checkDeclaredType(doc, where, MANIFEST_TYPES, 'image manifest');
  if (doc.layers === undefined && Array.isArray(doc.manifests)) throw new ManifestError(where, 'layers', `missing: this is an image index (media type ${m.mediaType}), not an image manifest`);
  const layers = checkList(doc.layers, where, 'layers', MAX_LAYERS);
  return {
    schemaVersion: 2,
    mediaType: m.mediaType,
    config: checkDescriptor(doc.config, where, 'config'),
    layers: layers.map((l, i) => checkDescriptor(l, where, `layers[${i}]`)),
    annotations: checkStringMap(doc.annotations, where, 'annotations'),
  };
}

export function parseIndex(m: FetchedManifest, name: string): ImageIndex {
  const doc = parseJson(m, name);
  const where = `${name} ${m.digest}`;
  checkDeclaredType(doc, where, INDEX_TYPES, 'image index');
  const list = checkList(doc.manifests, where, 'manifests', MAX_INDEX_ENTRIES);
  return { schemaVersion: 2, mediaType: m.mediaType, manifests: list.map((d, i) => checkDescriptor(d, where, `manifests[${i}]`)) };
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
