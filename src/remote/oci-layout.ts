/**
 * An OCI image-layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) as a
 * Repository: the embedded default target, so push, pull and serve need no registry.
 * Blobs are written under a temporary name, digest-checked, fsynced, then renamed into place;
 * index.json is replaced atomically, so a killed writer leaves only temps (removed by the
 * next writer) and blobs nothing names yet.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { commitTemp, removeStaleTemps, tempPath, writeFileAtomic } from '../io/atomic.ts';
import { FormatError } from '../io/errors.ts';
import { FileSource, wrapFsError } from '../io/file.ts';
import type { ByteSource } from '../io/types.ts';
import { DigestMismatchError, InvalidReferenceError, RemoteNotFoundError } from './errors.ts';
import { Annotation, MAX_MANIFEST_BYTES, MediaType, parseIndex, sha256Digest, sniffMediaType, type Descriptor, type FetchedManifest } from './manifest.ts';
import { DEFAULT_TAG, isDigest } from './reference.ts';
import type { PutBlobOptions, PutBlobResult, Repository } from './store.ts';

interface LayoutIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

/** The index entry tagged `tag`; `latest` also finds the only entry of an index that has one (as skopeo). */
export function findTagged(manifests: readonly Descriptor[], tag: string): Descriptor | undefined {
  return manifests.find((m) => (m.annotations?.[Annotation.refName] ?? '') === tag) ?? (tag === DEFAULT_TAG && manifests.length === 1 ? manifests[0] : undefined);
}

export class OciLayout implements Repository {
  readonly dir: string;
  readonly name: string;
  readonly kind = 'layout';
  #writes: Promise<unknown> = Promise.resolve();
  /** What this open created: the directory, or the layout's files inside an existing one. */
  #created: string[] = [];

  private constructor(dir: string) {
    this.dir = dir;
    this.name = `oci:${dir}`;
  }

  /** Opens a layout; `create` makes the directory skeleton when it is missing. */
  static async open(dir: string, opts: { create?: boolean } = {}): Promise<OciLayout> {
    const layout = new OciLayout(path.resolve(dir));
    const marker = path.join(layout.dir, 'oci-layout');
    try {
      const doc = JSON.parse((await readCapped(marker, 65536)).toString('utf8'));
      if (typeof doc.imageLayoutVersion !== 'string') throw new InvalidReferenceError(`${marker}: no imageLayoutVersion`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        if (e instanceof InvalidReferenceError || e instanceof FormatError) throw e;
        throw new InvalidReferenceError(`${marker}: not an OCI layout marker: ${(e as Error).message}`);
      }
      if (!opts.create) throw new RemoteNotFoundError(layout.dir, 'OCI image layout (oci-layout file)');
      const exists = async (p: string) => (await stat(p).catch(() => undefined)) !== undefined;
      if (!(await exists(layout.dir))) layout.#created = [layout.dir];
      else layout.#created = ['oci-layout', 'index.json', ...((await exists(path.join(layout.dir, 'blobs'))) ? [] : ['blobs'])].map((f) => path.join(layout.dir, f));
      await mkdir(path.join(layout.dir, 'blobs', 'sha256'), { recursive: true });
      // The marker goes last: a directory killed while it was being made is made again, and
      // an index.json it already has (tags) is kept.
      if ((await stat(path.join(layout.dir, 'index.json')).catch(() => undefined)) === undefined) {
        await layout.#writeIndex({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] });
      }
      await writeFileAtomic(marker, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    }
    if (opts.create) {
      await removeStaleTemps(layout.dir);
      await removeStaleTemps(path.join(layout.dir, 'blobs', 'sha256'));
    }
    return layout;
  }

  blobPath(digest: string): string {
    if (!isDigest(digest)) throw new InvalidReferenceError(`${this.name}: malformed digest "${digest}"`);
    const [alg, hex] = digest.split(':');
    return path.join(this.dir, 'blobs', alg!, hex!);
  }

  async #readIndex(): Promise<LayoutIndex> {
    const file = path.join(this.dir, 'index.json');
    let bytes: Buffer;
    try {
      bytes = await readCapped(file, MAX_MANIFEST_BYTES);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
      throw e;
    }
    // Validated like any index; kept whole so a rewrite does not drop fields we do not know.
    const fetched = { bytes, digest: 'index.json', mediaType: MediaType.ociIndex };
    parseIndex(fetched, this.name);
    return JSON.parse(bytes.toString('utf8')) as LayoutIndex;
  }

  #writeIndex(doc: LayoutIndex): Promise<void> {
    return writeFileAtomic(path.join(this.dir, 'index.json'), JSON.stringify(doc, null, 2));
  }

  /** Tags present in index.json. */
  async tags(): Promise<string[]> {
    return (await this.#readIndex()).manifests.map((d) => d.annotations?.[Annotation.refName]).filter((t): t is string => !!t);
  }

  async getManifest(reference: string): Promise<FetchedManifest> {
    let digest = reference;
    let mediaType: string | undefined;
    if (!isDigest(reference)) {
      const d = findTagged((await this.#readIndex()).manifests, reference);
      if (!d) throw new RemoteNotFoundError(this.name, `tag "${reference}"`);
      digest = d.digest;
      mediaType = d.mediaType;
    }
    let bytes: Buffer;
    try {
      bytes = await readCapped(this.blobPath(digest), MAX_MANIFEST_BYTES);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new RemoteNotFoundError(this.name, `manifest ${digest}`);
      throw e;
    }
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw new DigestMismatchError(this.blobPath(digest), digest, actual);
    return { bytes, digest, mediaType: sniffMediaType(bytes, mediaType ?? MediaType.ociManifest) };
  }

  async putManifest(bytes: Uint8Array, mediaType: string, tag?: string): Promise<string> {
    const digest = sha256Digest(bytes);
    await this.#writeBlob(digest, bytes);
    if (tag !== undefined) {
      await this.#serial(async () => {
        const idx = await this.#readIndex();
        idx.manifests = idx.manifests.filter((m) => m.annotations?.[Annotation.refName] !== tag);
        idx.manifests.push({ mediaType, digest, size: bytes.length, annotations: { [Annotation.refName]: tag } });
        await this.#writeIndex(idx);
      });
    }
    return digest;
  }

  /** index.json edits run one at a time so concurrent tags do not lose each other. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#writes.then(fn, fn);
    this.#writes = p.catch(() => {});
    return p;
  }

  async statBlob(digest: string): Promise<number | undefined> {
    try {
      return (await stat(this.blobPath(digest))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw wrapFsError(this.blobPath(digest), e);
    }
  }

  async openBlob(digest: string, size?: number): Promise<ByteSource> {
    let src: FileSource;
    try {
      src = await FileSource.open(this.blobPath(digest));
    } catch (e) {
      if (e instanceof RemoteNotFoundError || (e as Error).name === 'NotFoundError') throw new RemoteNotFoundError(this.name, `blob ${digest}`);
      throw e;
    }
    if (size !== undefined && src.size !== size) {
      await src.close();
      throw new DigestMismatchError(this.blobPath(digest), `${digest} (${size} bytes)`, `a file of ${src.size} bytes`);
    }
    return src;
  }

  async *streamBlob(digest: string, offset = 0): AsyncIterable<Uint8Array> {
    const file = this.blobPath(digest);
    try {
      yield* createReadStream(file, { start: offset, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new RemoteNotFoundError(this.name, `blob ${digest}`);
      throw wrapFsError(file, e);
    }
  }

  async putBlob(digest: string, content: ByteSource, opts: PutBlobOptions = {}): Promise<PutBlobResult> {
    const have = await this.statBlob(digest);
    if (have === content.size) return 'exists';
    const file = this.blobPath(digest);
    const tmp = tempPath(file);
    await mkdir(path.dirname(file), { recursive: true });
    const fh = await open(tmp, 'w');
    try {
      const hash = createHash('sha256');
      const buf = Buffer.allocUnsafe(1 << 20);
      for (let pos = 0; pos < content.size; ) {
        const n = await content.read(buf.subarray(0, Math.min(buf.length, content.size - pos)), pos);
        if (n === 0) throw new DigestMismatchError(content.name, `${content.size} bytes`, `${pos} bytes`);
        hash.update(buf.subarray(0, n));
        await fh.write(buf, 0, n, pos);
        pos += n;
        opts.onProgress?.(pos);
      }
      const actual = 'sha256:' + hash.digest('hex');
      if (actual !== digest) throw new DigestMismatchError(content.name, digest, actual);
      await fh.close();
      await commitTemp(tmp, file);
    } catch (e) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw e;
    }
    return 'uploaded';
  }

  async #writeBlob(digest: string, bytes: Uint8Array): Promise<void> {
    const file = this.blobPath(digest);
    if ((await this.statBlob(digest)) === bytes.length) return;
    await mkdir(path.dirname(file), { recursive: true });
    await writeFileAtomic(file, bytes);
  }

  /** Removes the layout this open created (not a directory it was created in), e.g. after a failed copy. */
  async removeIfCreated(): Promise<void> {
    for (const p of this.#created) await rm(p, { recursive: true, force: true });
    this.#created = [];
  }

  async close(): Promise<void> {}
}

/**
 * Reads a small JSON file whole, refusing one larger than `limit` before reading it (a
 * layout is input too: a huge index.json must not be pulled into memory). ENOENT passes
 * through untouched for the caller to decide.
 */
async function readCapped(file: string, limit: number): Promise<Buffer> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw e;
    throw wrapFsError(file, e);
  }
  try {
    const st = await fh.stat();
    // A device or FIFO planted in the layout would read forever.
    if (!st.isFile()) throw new FormatError(file, 'not a regular file');
    if (st.size > limit) throw new FormatError(file, `${st.size} bytes, more than the ${limit} a manifest or index may have`);
    return await fh.readFile();
  } catch (e) {
    throw e instanceof FormatError ? e : wrapFsError(file, e);
  } finally {
    await fh.close();
  }
}
