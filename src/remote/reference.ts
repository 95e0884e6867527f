/**
 * Image references, in the transports skopeo users type: `[docker://]host[:port]/repo[:tag|@sha256:…]`
 * (Docker Hub defaults when the first component is not a host), `oci:PATH[:tag|@digest]` for an
 * OCI image-layout directory, `oci-archive:FILE[:tag|@digest]` for one packed in a tar,
 * `docker-archive:FILE[:NAME[:TAG]|:@N]` for `docker save` output (read only), and a bare path
 * naming an existing layout. Any other transport is an error, never a registry lookup.
 */
import path from 'node:path';
import { fsPromises } from '../io/builtins.ts';
import { InvalidReferenceError } from './errors.ts';

export interface RegistryReference {
  readonly kind: 'registry';
  /** The registry as written (`docker.io`, `127.0.0.1:5000`). */
  readonly registry: string;
  /** Where the API lives (`registry-1.docker.io` for Docker Hub). */
  readonly host: string;
  readonly repository: string;
  readonly tag: string | undefined;
  readonly digest: string | undefined;
}

export interface LayoutReference {
  readonly kind: 'oci';
  readonly path: string;
  readonly tag: string | undefined;
  readonly digest: string | undefined;
}

export interface ArchiveReference {
  readonly kind: 'oci-archive';
  /** The tar file holding the layout. */
  readonly path: string;
  readonly tag: string | undefined;
  readonly digest: string | undefined;
}

/**
 * A `docker save` tar (docker-archive:FILE). `tag` is the image in it as `docker save` named it
 * (`busybox:1.36`, `localhost:5000/app:v1`) or `@N` for the N-th entry of its manifest.json;
 * undefined picks the only image. Such archives carry no manifest digests to name.
 */
export interface DockerArchiveReference {
  readonly kind: 'docker-archive';
  readonly path: string;
  readonly tag: string | undefined;
  readonly digest: undefined;
}

export type ImageReference = RegistryReference | LayoutReference | ArchiveReference | DockerArchiveReference;

export const DEFAULT_TAG = 'latest';
const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
const HOST = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$/;

/** True for a well-formed `sha256:<64 hex>` (or sha512) digest. */
export function isDigest(text: unknown): boolean {
  // A JSON document may hold anything where a digest belongs; an array would stringify into one.
  return typeof text === 'string' && DIGEST.test(text);
}

/** The tag or digest a reference resolves (digest wins; `latest` when neither is given). */
export function referenceTarget(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}

export const TRANSPORTS = ['docker://', 'oci:', 'oci-archive:', 'docker-archive:'] as const;
/** skopeo transports this project does not read, named so the error can say so. */
const OTHER_TRANSPORTS = ['dir', 'docker-daemon', 'containers-storage', 'ostree', 'sif', 'tarball'];

/** Parses a reference; throws InvalidReferenceError naming the text and the broken part. */
export function parseReference(text: string): ImageReference {
  if (text.startsWith('docker://')) {
    if (text.length === 9) throw new InvalidReferenceError(`${text}: missing the image after "docker://"`);
    return parseRegistry(text.slice(9), text);
  }
  if (text.startsWith('oci:')) return parseLayout(text, 'oci');
  if (text.startsWith('oci-archive:')) return parseLayout(text, 'oci-archive');
  if (text.startsWith('docker-archive:')) return parseDockerArchive(text);
  checkTransport(text);
  if (looksLikePath(text)) {
    throw new InvalidReferenceError(`${text}: not an OCI image layout (no ${text.replace(/\/$/, '')}/oci-layout); write oci:${text} to create one there`);
  }
  return parseRegistry(text, text);
}

/**
 * Like parseReference, and a text without a transport that names an existing OCI image-layout
 * directory (optionally followed by `:TAG`) is that layout. Parsed references pass through.
 */
export async function resolveReference(ref: string | ImageReference): Promise<ImageReference> {
  if (typeof ref !== 'string') return ref;
  if (TRANSPORTS.some((t) => ref.startsWith(t))) return parseReference(ref);
  if (await isLayoutDir(ref)) return { kind: 'oci', path: ref, tag: undefined, digest: undefined };
  const colon = ref.lastIndexOf(':');
  if (colon > 0 && colon > ref.lastIndexOf('/') && (await isLayoutDir(ref.slice(0, colon)))) return parseReference(`oci:${ref}`);
  return parseReference(ref);
}

async function isLayoutDir(dir: string): Promise<boolean> {
  try {
    return (await fsPromises().stat(path.join(dir, 'oci-layout'))).isFile();
  } catch {
    return false;
  }
}

function looksLikePath(text: string): boolean {
  return text.startsWith('/') || text.startsWith('./') || text.startsWith('../') || text.startsWith('~') || text === '.' || text === '..';
}

/**
 * The transport `text` starts with: `scheme://`, or `word:` when what follows the colon up to
 * the first slash is no port (so `localhost:5000/repo` and `alpine:3.18` have none).
 */
export function transportOf(text: string): string | undefined {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(text);
  if (scheme) return `${scheme[1]}://`;
  const word = /^([A-Za-z][A-Za-z0-9_.-]*):([^/]*)/.exec(text);
  if (!word) return undefined;
  if (OTHER_TRANSPORTS.includes(word[1]!) || (text[word[0].length] === '/' && !/^[0-9]+$/.test(word[2]!))) return `${word[1]}:`;
  return undefined;
}

/** Refuses the transports not handled here: each would otherwise become a Docker Hub lookup of a mangled name. */
function checkTransport(text: string): void {
  const t = transportOf(text);
  if (t === undefined) return;
  const supported = 'docker://HOST/REPO[:TAG], oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG] or the path of an OCI layout';
  if (OTHER_TRANSPORTS.includes(t.slice(0, -1))) throw new InvalidReferenceError(`${text}: the skopeo transport "${t}" is not supported; use ${supported}`);
  const hint = /^https?:/i.test(t) ? ' (for a registry write docker://HOST/REPO:TAG; loopback registries use plain HTTP, others take --plain-http)' : '';
  throw new InvalidReferenceError(`${text}: unknown transport "${t}"; use ${supported}${hint}`);
}

function splitTagDigest(text: string, whole: string): { name: string; tag?: string; digest?: string } {
  let name = text;
  let digest: string | undefined;
  const at = name.indexOf('@');
  if (at >= 0) {
    digest = name.slice(at + 1);
    name = name.slice(0, at);
    if (!DIGEST.test(digest)) throw new InvalidReferenceError(`${whole}: bad digest "${digest}" (want sha256:<64 hex>)`);
  }
  let tag: string | undefined;
  const colon = name.lastIndexOf(':');
  if (colon > name.lastIndexOf('/')) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (!TAG.test(tag)) throw new InvalidReferenceError(`${whole}: bad tag "${tag}"`);
  }
  return { name, tag, digest };
}

function parseLayout(text: string, kind: 'oci' | 'oci-archive'): LayoutReference | ArchiveReference {
  const { name, tag, digest } = splitTagDigest(text.slice(kind.length + 1), text);
  if (name === '') throw new InvalidReferenceError(`${text}: missing the ${kind === 'oci' ? 'layout directory' : 'archive file'} after "${kind}:"`);
  return { kind, path: name, tag, digest };
}

/**
 * `docker-archive:FILE[:NAME[:TAG]]` as skopeo reads it: the path ends at the first colon (so
 * it holds none), the rest names an image by the tag `docker save` gave it, or `@N` by its place.
 */
function parseDockerArchive(text: string): DockerArchiveReference {
  const rest = text.slice('docker-archive:'.length);
  const colon = rest.indexOf(':');
  const file = colon < 0 ? rest : rest.slice(0, colon);
  const image = colon < 0 ? undefined : rest.slice(colon + 1);
  if (file === '') throw new InvalidReferenceError(`${text}: missing the archive file after "docker-archive:"`);
  if (image !== undefined) {
    if (image.startsWith('@') ? !/^@[0-9]+$/.test(image) : image.includes('@')) {
      throw new InvalidReferenceError(`${text}: name the image in the archive as NAME[:TAG] or @INDEX, not "${image}" (docker save archives carry no digests)`);
    }
    if (!image.startsWith('@')) parseRegistry(image, text);
  }
  return { kind: 'docker-archive', path: file, tag: image === '' ? undefined : image, digest: undefined };
}

function parseRegistry(ref: string, text: string): RegistryReference {
  if (ref === '' || /\s/.test(ref)) throw new InvalidReferenceError(`"${text}": not an image reference`);
  const { name, tag, digest } = splitTagDigest(ref, text);
  const parts = name.split('/');
  let registry = DOCKER_HUB;
  const first = parts[0]!;
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    registry = first;
    parts.shift();
    if (!HOST.test(registry)) throw new InvalidReferenceError(`${text}: bad registry host "${registry}"`);
  }
  if (registry === DOCKER_HUB || registry === 'index.docker.io') {
    registry = DOCKER_HUB;
    if (parts.length === 1) parts.unshift('library');
  }
  for (const p of parts) {
    if (!COMPONENT.test(p)) throw new InvalidReferenceError(`${text}: bad repository component "${p}" (lowercase letters, digits, . _ -)`);
  }
  const repository = parts.join('/');
  if (repository.length > 255) throw new InvalidReferenceError(`${text}: repository name longer than 255 characters`);
  return { kind: 'registry', registry, host: registry === DOCKER_HUB ? DOCKER_HUB_API : registry, repository, tag, digest };
}

/** Formats a reference back to text (normalised: Docker Hub names keep their `docker.io/` prefix). */
export function formatReference(ref: ImageReference): string {
  const suffix = (ref.tag ? `:${ref.tag}` : '') + (ref.digest ? `@${ref.digest}` : '');
  return ref.kind === 'registry' ? `${ref.registry}/${ref.repository}${suffix}` : `${ref.kind}:${ref.path}${suffix}`;
}

/** True for hosts on this machine, which default to plain HTTP. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/:[0-9]+$/, '').replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}
