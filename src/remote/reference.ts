/**
 * Image references: `host[:port]/repo[:tag|@sha256:…]` (Docker Hub defaults when the first
 * component is not a host) and `oci:PATH[:tag|@digest]` for an OCI image-layout directory.
 */
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

export type ImageReference = RegistryReference | LayoutReference;

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

/** Parses a reference; throws InvalidReferenceError naming the text and the broken part. */
export function parseReference(text: string): ImageReference {
  if (text.startsWith('oci:')) return parseLayout(text);
  return parseRegistry(text);
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

function parseLayout(text: string): LayoutReference {
  const { name, tag, digest } = splitTagDigest(text.slice(4), text);
  if (name === '') throw new InvalidReferenceError(`${text}: missing the layout directory after "oci:"`);
  return { kind: 'oci', path: name, tag, digest };
}

function parseRegistry(text: string): RegistryReference {
  if (text === '' || /\s/.test(text)) throw new InvalidReferenceError(`"${text}": not an image reference`);
  const { name, tag, digest } = splitTagDigest(text, text);
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
  return ref.kind === 'oci' ? `oci:${ref.path}${suffix}` : `${ref.registry}/${ref.repository}${suffix}`;
}

/** True for hosts on this machine, which default to plain HTTP. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/:[0-9]+$/, '').replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}
