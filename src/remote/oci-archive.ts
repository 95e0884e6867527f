/**
 * An OCI image layout packed in a tar file (`oci-archive:FILE[:tag]`, as skopeo writes it),
 * as a Repository. Reading needs no unpacking: blobs are read in place as tar members.
 * Writing stages new blobs and the new index in an OCI layout next to the file; once a
 * manifest has been stored, close() writes the whole archive under a temporary name and
 * renames it over the old one, so a failed push or copy leaves the file as it was.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FormatError, NotFoundError } from '../io/errors.ts';
import { FileSource } from '../io/file.ts';
import type { ByteSource } from '../io/types.ts';
import { readAt, readExact, SliceSource } from '../io/util.ts';
import { field, isTarHeader, numeric, octal, paxRecords, putChecksum, putString, TAR_BLOCK } from '../zfile/tar.ts';
import { DigestMismatchError, InvalidReferenceError, RemoteNotFoundError } from './errors.ts';
import { MediaType, sha256Digest, sniffMediaType, type Descriptor, type FetchedManifest } from './manifest.ts';
import { findTagged, OciLayout } from './oci-layout.ts';
import { isDigest } from './reference.ts';
import type { PutBlobOptions, PutBlobResult, Repository } from './store.ts';

export interface Member {
  offset: number;
  size: number;
}

/** Extended headers larger than this are refused rather than read into memory. */
const MAX_EXTENDED = 1 << 20;

/**
 * The regular members of a tar file by normalised name (later members win, as tar extracts).
 * A symbolic link to a regular member is that member under its own name too (docker save
 * links a layer shared by two images).
 */
export async function listMembers(src: ByteSource): Promise<Map<string, Member>> {
  const members = new Map<string, Member>();
  const links = new Map<string, string>();
  const h = new Uint8Array(TAR_BLOCK);
  let pax = new Map<string, string>();
  let longName: string | undefined;
  let longLink: string | undefined;
  for (let at = 0; at + TAR_BLOCK <= src.size; ) {
    await readExact(src, h, at);
    if (h.every((b) => b === 0)) break;
    if (!isTarHeader(h)) throw new FormatError(src.name, 'not a tar header (an oci-archive is a tar of an OCI layout)', at);
    const type = String.fromCharCode(h[156]!);
    const hsize = numeric(h, 124, 12);
    if (hsize === undefined) throw new FormatError(src.name, 'bad tar size field', at + 124);
    const dataAt = at + TAR_BLOCK;
    const extended = type === 'x' || type === 'g' || type === 'L' || type === 'K';
    const size = extended || !pax.has('size') ? hsize : Number(pax.get('size'));
    if (dataAt + size > src.size) throw new FormatError(src.name, `tar member of ${size} bytes at ${dataAt} runs past the end (${src.size})`, at + 124);
    if (extended) {
      if (hsize > MAX_EXTENDED) throw new FormatError(src.name, `tar extended header of ${hsize} bytes`, at + 124);
      const body = await readAt(src, dataAt, hsize);
      if (type === 'x') pax = paxRecords(body, src.name, dataAt);
      if (type === 'L') longName = field(body, 0, body.length);
      if (type === 'K') longLink = field(body, 0, body.length);
    } else {
      const prefix = field(h, 257, 6) === 'ustar' ? field(h, 345, 155) : '';
      const name = normalMember(pax.get('path') ?? longName ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100)));
      if (type === '0' || type === '\0' || type === '7') members.set(name, { offset: dataAt, size });
      if (type === '2') links.set(name, path.posix.join(path.posix.dirname(name), pax.get('linkpath') ?? longLink ?? field(h, 157, 100)));
      pax = new Map();
      longName = undefined;
      longLink = undefined;
    }
    at = dataAt + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
  }
  for (const [name, target] of links) {
    const m = members.get(normalMember(target));
    if (m && !members.has(name)) members.set(name, m);
  }
  return members;
}

function normalMember(name: string): string {
  return path.posix.normalize(name).replace(/^(\.\/|\/)+/, '');
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

function ustarHeader(name: string, size: number, type: '0' | 'x'): Uint8Array {
  const h = new Uint8Array(TAR_BLOCK);
  putString(h, 0, name);
  putString(h, 100, octal(0o644, 6) + ' \0');
  putString(h, 108, octal(0, 6) + ' \0');
  putString(h, 116, octal(0, 6) + ' \0');
  putString(h, 124, octal(size, 11) + ' ');
  // mtime 0: the same layout packs into the same archive bytes on every run.
  putString(h, 136, octal(0, 11) + ' ');
  h[156] = type.charCodeAt(0);
  putString(h, 257, 'ustar\0');
  putString(h, 263, '00');
  putChecksum(h);
  return h;
}

/** The header blocks of one member: a PAX header first when the name or size does not fit ustar. */
function memberHeader(name: string, size: number): Uint8Array {
  const records = (name.length > 100 ? paxRecord('path', name) : '') + (size >= 8 ** 11 ? paxRecord('size', String(size)) : '');
  const ustar = ustarHeader(name.length > 100 ? name.slice(-100) : name, size >= 8 ** 11 ? 0 : size, '0');
  if (records === '') return ustar;
  const body = Buffer.from(records);
  const out = new Uint8Array(TAR_BLOCK + Math.ceil(body.length / TAR_BLOCK) * TAR_BLOCK + TAR_BLOCK);
  out.set(ustarHeader('PaxHeader', body.length, 'x'));
  out.set(body, TAR_BLOCK);
  out.set(ustar, out.length - TAR_BLOCK);
  return out;
}

async function isDirectory(dir: string): Promise<boolean> {
  return stat(dir).then((s) => s.isDirectory(), () => false);
}

export class OciArchive implements Repository {
  readonly file: string;
  readonly name: string;
  readonly kind = 'archive';
  readonly #members: Map<string, Member>;
  readonly #source: FileSource | undefined;
  /** Where new blobs and the new index wait until close(); absent when opened for reading. */
  readonly #staging: OciLayout | undefined;
  #commit = false;

  private constructor(file: string, source: FileSource | undefined, members: Map<string, Member>, staging: OciLayout | undefined) {
    this.file = file;
    this.name = `oci-archive:${file}`;
    this.#source = source;
    this.#members = members;
    this.#staging = staging;
  }

  /** Opens an archive; `create` allows writing (and a missing file, which close() creates). */
  static async open(file: string, opts: { create?: boolean } = {}): Promise<OciArchive> {
    const abs = path.resolve(file);
    let source: FileSource | undefined;
    try {
      source = await FileSource.open(abs);
    } catch (e) {
      if ((e as Error).name !== 'NotFoundError' || !opts.create) {
        if ((e as Error).name === 'NotFoundError') throw new RemoteNotFoundError(abs, 'OCI archive (a tar of an OCI image layout)');
        throw e;
      }
    }
    try {
      const members = source ? await listMembers(source) : new Map<string, Member>();
      if (source && !members.has('oci-layout')) throw new InvalidReferenceError(`${abs}: a tar file without an oci-layout member is not an OCI archive`);
      let staging: OciLayout | undefined;
      if (opts.create) {
        if (!(await isDirectory(path.dirname(abs)))) throw new NotFoundError(`${path.dirname(abs)}: no such directory (to write ${abs} in)`);
        const dir = `${abs}.tmp-${randomBytes(4).toString('hex')}.d`;
        staging = await OciLayout.open(dir, { create: true });
        const index = members.get('index.json');
        if (index && source) await writeFile(path.join(dir, 'index.json'), await readAt(source, index.offset, index.size));
      }
      return new OciArchive(abs, source, members, staging);
    } catch (e) {
      await source?.close();
      throw e;
    }
  }

  #blobMember(digest: string): Member | undefined {
    if (!isDigest(digest)) throw new InvalidReferenceError(`${this.name}: malformed digest "${digest}"`);
    return this.#members.get(`blobs/${digest.replace(':', '/')}`);
  }

  async #readMember(m: Member): Promise<Uint8Array> {
    return readAt(this.#source!, m.offset, m.size);
  }

  async #index(): Promise<Descriptor[]> {
    let text: string;
    if (this.#staging) text = await readFile(path.join(this.#staging.dir, 'index.json'), 'utf8');
    else {
      const m = this.#members.get('index.json');
      if (!m) return [];
      text = Buffer.from(await this.#readMember(m)).toString('utf8');
    }
    let doc: { manifests?: unknown };
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new InvalidReferenceError(`${this.name}: unreadable index.json: ${(e as Error).message}`);
    }
    if (!Array.isArray(doc?.manifests)) throw new InvalidReferenceError(`${this.name}: unreadable index.json: no "manifests" array`);
    return doc.manifests as Descriptor[];
  }

  async getManifest(reference: string): Promise<FetchedManifest> {
    let digest = reference;
    let mediaType: string | undefined;
    if (!isDigest(reference)) {
      const d = findTagged(await this.#index(), reference);
      if (!d) throw new RemoteNotFoundError(this.name, `tag "${reference}"`);
      ({ digest, mediaType } = d);
    }
    let bytes: Uint8Array;
    if (this.#staging && (await this.#staging.statBlob(digest)) !== undefined) bytes = await readFile(this.#staging.blobPath(digest));
    else {
      const m = this.#blobMember(digest);
      if (!m) throw new RemoteNotFoundError(this.name, `manifest ${digest}`);
      bytes = await this.#readMember(m);
    }
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw new DigestMismatchError(`${this.name}:${digest}`, digest, actual);
    return { bytes, digest, mediaType: sniffMediaType(bytes, mediaType ?? MediaType.ociManifest) };
  }

  async statBlob(digest: string): Promise<number | undefined> {
    return (await this.#staging?.statBlob(digest)) ?? this.#blobMember(digest)?.size;
  }

  async openBlob(digest: string, size?: number): Promise<ByteSource> {
    if (this.#staging && (await this.#staging.statBlob(digest)) !== undefined) return this.#staging.openBlob(digest, size);
    const m = this.#blobMember(digest);
    if (!m) throw new RemoteNotFoundError(this.name, `blob ${digest}`);
    if (size !== undefined && m.size !== size) throw new DigestMismatchError(`${this.name}:${digest}`, `${digest} (${size} bytes)`, `a member of ${m.size} bytes`);
    return new SliceSource(await FileSource.open(this.file), m.offset, m.size, `${this.name}:${digest}`);
  }

  async *streamBlob(digest: string, offset = 0): AsyncIterable<Uint8Array> {
    if (this.#staging && (await this.#staging.statBlob(digest)) !== undefined) return yield* this.#staging.streamBlob(digest, offset);
    const m = this.#blobMember(digest);
    if (!m) throw new RemoteNotFoundError(this.name, `blob ${digest}`);
    if (offset < m.size) yield* createReadStream(this.file, { start: m.offset + offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
  }

  #writable(): OciLayout {
    if (!this.#staging) throw new InvalidReferenceError(`${this.name}: opened for reading`);
    return this.#staging;
  }

  async putBlob(digest: string, content: ByteSource, opts: PutBlobOptions = {}): Promise<PutBlobResult> {
    const staging = this.#writable();
    if (this.#blobMember(digest)?.size === content.size) return 'exists';
    return staging.putBlob(digest, content, opts);
  }

  async putManifest(bytes: Uint8Array, mediaType: string, tag?: string): Promise<string> {
    const digest = await this.#writable().putManifest(bytes, mediaType, tag);
    this.#commit = true;
    return digest;
  }

  /** Writes the archive when a manifest was stored, then drops the staging layout. */
  async close(): Promise<void> {
    try {
      if (this.#commit) await this.#writeArchive();
    } finally {
      await this.#source?.close();
      if (this.#staging) await rm(this.#staging.dir, { recursive: true, force: true });
    }
  }

  async #writeArchive(): Promise<void> {
    const staging = this.#staging!;
    const tmp = `${this.file}.tmp-${randomBytes(4).toString('hex')}`;
    const fh = await open(tmp, 'w');
    try {
      let pos = 0;
      const write = async (b: Uint8Array) => {
        await fh.write(b, 0, b.length, pos);
        pos += b.length;
      };
      const member = async (name: string, size: number, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>) => {
        await write(memberHeader(name, size));
        for await (const c of chunks) await write(c);
        if (size % TAR_BLOCK) await write(new Uint8Array(TAR_BLOCK - (size % TAR_BLOCK)));
      };
      const fromFile = async (file: string) => {
        const bytes = await readFile(file);
        await member(path.relative(staging.dir, file).split(path.sep).join('/'), bytes.length, [bytes]);
      };
      await fromFile(path.join(staging.dir, 'oci-layout'));
      await fromFile(path.join(staging.dir, 'index.json'));
      const staged = new Set<string>();
      for (const alg of (await readdir(path.join(staging.dir, 'blobs'))).sort()) {
        for (const hex of (await readdir(path.join(staging.dir, 'blobs', alg))).sort()) {
          if (hex.includes('.tmp-')) continue;
          staged.add(`blobs/${alg}/${hex}`);
          const digest = `${alg}:${hex}`;
          await member(`blobs/${alg}/${hex}`, (await staging.statBlob(digest))!, staging.streamBlob(digest));
        }
      }
      for (const [name, m] of this.#members) {
        if (!name.startsWith('blobs/') || staged.has(name)) continue;
        const chunks = m.size ? (createReadStream(this.file, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) : [];
        await member(name, m.size, chunks);
      }
      await write(new Uint8Array(2 * TAR_BLOCK));
      await fh.sync();
      await fh.close();
      await rename(tmp, this.file);
    } catch (e) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw e;
    }
  }
}
