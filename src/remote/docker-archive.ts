/**
 * `docker save` output (`docker-archive:FILE[:NAME:TAG|:@N]`) as a read-only Repository. The
 * archive's manifest.json lists, per image, its config file, its layer files (the legacy
 * `<id>/layer.tar`, or `blobs/sha256/<hex>` since Docker 25) and its RepoTags. An image is
 * offered as the Docker v2 schema 2 manifest that describes those files, so everything that
 * reads a repository (resolveImage, openLayer, convert) reads an archive the same way; blobs
 * are read in place as tar members.
 *
 * Digests: a `blobs/sha256/<hex>` member is addressed by its name. A legacy layer.tar is an
 * uncompressed tar, so its digest is its diffID, taken from the config at the same position
 * (readers that verify the stream check it); one that is compressed after all is hashed once.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { FormatError, ReadOnlyError } from '../io/errors.ts';
import { FileSource } from '../io/file.ts';
import type { ByteSource } from '../io/types.ts';
import { readAt, SliceSource } from '../io/util.ts';
import { DigestMismatchError, InvalidReferenceError, RemoteNotFoundError } from './errors.ts';
import { encodeJson, MAX_LAYERS, MAX_MANIFEST_BYTES, MediaType, sha256Digest, type Descriptor, type FetchedManifest } from './manifest.ts';
import { listMembers, type Member } from './oci-archive.ts';
import { DEFAULT_TAG, isDigest } from './reference.ts';
import type { PutBlobResult, Repository } from './store.ts';

/** Layer media types by the compression found at the start of the file. */
const LAYER_TYPE = {
  plain: MediaType.dockerLayer,
  gzip: `${MediaType.dockerLayer}.gzip`,
  zstd: `${MediaType.dockerLayer}.zstd`,
} as const;

interface SavedImage {
  /** The entry's position in manifest.json. */
  index: number;
  tags: string[];
  manifest: FetchedManifest;
}

export class DockerArchive implements Repository {
  readonly file: string;
  readonly name: string;
  readonly kind = 'archive';
  readonly #source: FileSource;
  readonly #images: SavedImage[];
  /** Blob digest → the member holding it. */
  readonly #blobs: Map<string, Member>;

  private constructor(file: string, source: FileSource, images: SavedImage[], blobs: Map<string, Member>) {
    this.file = file;
    this.name = `docker-archive:${file}`;
    this.#source = source;
    this.#images = images;
    this.#blobs = blobs;
  }

  static async open(file: string): Promise<DockerArchive> {
    const abs = path.resolve(file);
    let source: FileSource;
    try {
      source = await FileSource.open(abs);
    } catch (e) {
      if ((e as Error).name === 'NotFoundError') throw new RemoteNotFoundError(abs, 'docker archive (docker save output)');
      throw e;
    }
    try {
      const name = `docker-archive:${abs}`;
      const members = await listMembers(source);
      const list = members.get('manifest.json');
      if (!list) throw new InvalidReferenceError(`${abs}: a tar file without a manifest.json member is not a docker archive (docker save output)`);
      if (list.size > MAX_MANIFEST_BYTES) throw new FormatError(`${name}:manifest.json`, `${list.size} bytes, more than the ${MAX_MANIFEST_BYTES} allowed`);
      const entries = parseList(await readAt(source, list.offset, list.size), `${name}:manifest.json`);
      const blobs = new Map<string, Member>();
      const member = (p: string, what: string): Member => {
        const m = members.get(path.posix.normalize(p).replace(/^(\.\/|\/)+/, ''));
        if (!m) throw new InvalidReferenceError(`${name}: manifest.json names ${what} "${p}", which the archive does not hold`);
        return m;
      };
      const images: SavedImage[] = [];
      for (const [i, e] of entries.entries()) {
        const configMember = member(e.Config, 'the config');
        if (configMember.size > MAX_MANIFEST_BYTES) throw new FormatError(`${name}:${e.Config}`, `a config of ${configMember.size} bytes`);
        const configBytes = await readAt(source, configMember.offset, configMember.size);
        const configDigest = sha256Digest(configBytes);
        const named = digestOfName(e.Config);
        if (named && named !== configDigest) throw new DigestMismatchError(`${name}:${e.Config}`, named, configDigest);
        blobs.set(configDigest, configMember);
        const diffIds = diffIdsOf(configBytes, `${name}:${e.Config}`);
        const layers: Descriptor[] = [];
        for (const [j, p] of e.Layers.entries()) {
          const m = member(p, `layer ${j}`);
          const kind = await compressionOf(source, m);
          let digest = digestOfName(p) ?? (kind === 'plain' ? diffIds[j] : undefined);
          digest ??= await hashMember(source, m);
          blobs.set(digest, m);
          layers.push({ mediaType: LAYER_TYPE[kind], digest, size: m.size });
        }
        const manifest = encodeJson({
          schemaVersion: 2,
          mediaType: MediaType.dockerManifest,
          config: { mediaType: MediaType.dockerConfig, digest: configDigest, size: configBytes.length },
          layers,
        });
        images.push({ index: i, tags: e.RepoTags, manifest: { bytes: manifest, digest: sha256Digest(manifest), mediaType: MediaType.dockerManifest } });
      }
      return new DockerArchive(abs, source, images, blobs);
    } catch (e) {
      await source.close();
      throw e;
    }
  }

  /** The tags `docker save` recorded, per image in manifest.json order. */
  get images(): { index: number; tags: string[]; digest: string }[] {
    return this.#images.map((i) => ({ index: i.index, tags: i.tags, digest: i.manifest.digest }));
  }

  /**
   * An image by the manifest digest offered for it, by `@N`, by a RepoTag (`NAME:TAG`, or `NAME`
   * for `NAME:latest`), or — as `latest` — the only image of the archive.
   */
  async getManifest(reference: string): Promise<FetchedManifest> {
    const img = this.#find(reference);
    if (!img) {
      const have = this.#images.map((i) => (i.tags.length ? i.tags.join(', ') : `@${i.index}`)).join('; ');
      throw new RemoteNotFoundError(this.name, `image "${reference}" (the archive holds: ${have || 'nothing'}; name one as docker-archive:FILE:NAME:TAG or :@N)`);
    }
    return img.manifest;
  }

  #find(reference: string): SavedImage | undefined {
    if (isDigest(reference)) return this.#images.find((i) => i.manifest.digest === reference);
    if (/^@[0-9]+$/.test(reference)) return this.#images[Number(reference.slice(1))];
    const tagged = this.#images.find((i) => i.tags.includes(reference) || i.tags.includes(`${reference}:${DEFAULT_TAG}`) || i.tags.includes(`docker.io/${reference}`));
    if (tagged || reference !== DEFAULT_TAG) return tagged;
    return this.#images.length === 1 ? this.#images[0] : undefined;
  }

  #member(digest: string): Member {
    if (!isDigest(digest)) throw new InvalidReferenceError(`${this.name}: malformed digest "${digest}"`);
    const m = this.#blobs.get(digest);
    if (!m) throw new RemoteNotFoundError(this.name, `blob ${digest}`);
    return m;
  }

  async statBlob(digest: string): Promise<number | undefined> {
    if (!isDigest(digest)) throw new InvalidReferenceError(`${this.name}: malformed digest "${digest}"`);
    return this.#blobs.get(digest)?.size;
  }

  async openBlob(digest: string, size?: number): Promise<ByteSource> {
    const m = this.#member(digest);
    if (size !== undefined && m.size !== size) throw new DigestMismatchError(`${this.name}:${digest}`, `${digest} (${size} bytes)`, `a member of ${m.size} bytes`);
    return new SliceSource(await FileSource.open(this.file), m.offset, m.size, `${this.name}:${digest}`);
  }

  async *streamBlob(digest: string, offset = 0): AsyncIterable<Uint8Array> {
    const m = this.#member(digest);
    if (offset < m.size) yield* createReadStream(this.file, { start: m.offset + offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
  }

  putBlob(): Promise<PutBlobResult> {
    throw new ReadOnlyError(`${this.name} (docker archives are read, not written; write oci-archive:FILE instead)`);
  }

  putManifest(): Promise<string> {
    throw new ReadOnlyError(`${this.name} (docker archives are read, not written; write oci-archive:FILE instead)`);
  }

  async close(): Promise<void> {
    await this.#source.close();
  }
}

interface ListEntry {
  Config: string;
  Layers: string[];
  RepoTags: string[];
}

/** manifest.json: an array of {Config, RepoTags, Layers}, checked field by field. */
function parseList(bytes: Uint8Array, where: string): ListEntry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new InvalidReferenceError(`${where}: not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(doc) || doc.length === 0) throw new InvalidReferenceError(`${where}: not a non-empty array of images`);
  return doc.map((e: unknown, i) => {
    const x = e as Record<string, unknown> | null;
    if (typeof x !== 'object' || x === null || typeof x.Config !== 'string') throw new InvalidReferenceError(`${where}: entry ${i} has no "Config" file name`);
    if (!Array.isArray(x.Layers) || x.Layers.some((l) => typeof l !== 'string')) throw new InvalidReferenceError(`${where}: entry ${i} has no "Layers" list of file names`);
    if (x.Layers.length > MAX_LAYERS) throw new InvalidReferenceError(`${where}: entry ${i} lists ${x.Layers.length} layers, more than ${MAX_LAYERS}`);
    const tags = x.RepoTags == null ? [] : x.RepoTags;
    if (!Array.isArray(tags) || tags.some((t) => typeof t !== 'string')) throw new InvalidReferenceError(`${where}: entry ${i} has a "RepoTags" that is not a list of names`);
    return { Config: x.Config, Layers: x.Layers as string[], RepoTags: tags as string[] };
  });
}

/** `blobs/sha256/<hex>` (or `<hex>.json`, the legacy config name) names its own digest. */
function digestOfName(p: string): string | undefined {
  const m = /(?:^|\/)(?:blobs\/sha256\/)?([a-f0-9]{64})(?:\.json)?$/.exec(p);
  return m ? `sha256:${m[1]}` : undefined;
}

/** The config's rootfs.diff_ids (may be shorter than the layer list; readers check). */
function diffIdsOf(config: Uint8Array, where: string): (string | undefined)[] {
  try {
    const ids = JSON.parse(Buffer.from(config).toString('utf8'))?.rootfs?.diff_ids;
    return Array.isArray(ids) ? ids.map((d: unknown) => (isDigest(d) ? (d as string) : undefined)) : [];
  } catch (e) {
    throw new InvalidReferenceError(`${where}: the image config is not JSON: ${(e as Error).message}`);
  }
}

async function compressionOf(src: ByteSource, m: Member): Promise<keyof typeof LAYER_TYPE> {
  const head = await readAt(src, m.offset, Math.min(4, m.size));
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  return 'plain';
}

async function hashMember(src: ByteSource, m: Member): Promise<string> {
  const h = createHash('sha256');
  const buf = new Uint8Array(1 << 20);
  for (let pos = 0; pos < m.size; ) {
    const n = Math.min(buf.length, m.size - pos);
    const got = await src.read(buf.subarray(0, n), m.offset + pos);
    if (got === 0) throw new FormatError(src.name, `member ends early at ${pos} of ${m.size} bytes`, m.offset + pos);
    h.update(buf.subarray(0, got));
    pos += got;
  }
  return `sha256:${h.digest('hex')}`;
}
