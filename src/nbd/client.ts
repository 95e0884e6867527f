/**
 * An NBD client (doc/proto.md of NetworkBlockDevice/nbd): fixed newstyle handshake,
 * OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT, OPT_GO; then pipelined reads and block status
 * (base:allocation, and other contexts such as qemu:dirty-bitmap:NAME) with structured
 * replies. It is a read-only BlockDevice: import reads an export through it, skipping what
 * block status calls holes and zeros. `nbds://` and `nbds+unix://` URIs start TLS first
 * (OPT_STARTTLS), with libnbd's query parameters: tls-psk-file, tls-certificates,
 * tls-verify-peer, tls-hostname.
 */
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { InvalidArgumentError } from '../io/errors.ts';
import type { BlockDevice, Extent } from '../io/types.ts';
import { checkRange, settleAll } from '../io/util.ts';
import { NbdClientError } from './errors.ts';
import type { NbdAddress } from './server.ts';
import {
  CMD_BLOCK_STATUS,
  CMD_DISC,
  CMD_READ,
  CTX_BASE_ALLOCATION,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO_BLOCK_SIZE,
  INFO_EXPORT,
  NBDMAGIC,
  OPT_GO,
  OPT_SET_META_CONTEXT,
  OPT_STARTTLS,
  OPT_STRUCTURED_REPLY,
  OPTION_REPLY_MAGIC,
  REP_ACK,
  REP_ERR_UNKNOWN,
  REP_INFO,
  REP_META_CONTEXT,
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STATE_HOLE,
  STATE_ZERO,
  STRUCTURED_REPLY_MAGIC,
} from './protocol.ts';
import { exportInfoRequest, metaContextRequest } from './options.ts';
import { parsePskKeys } from './tls.ts';

/**
 * Largest read request sent. Servers must accept 32 MiB, but 1 MiB pieces keep several in
 * flight per import batch, so the server reads ahead while we write (4 MiB pieces imported
 * from qemu-nbd ~1.3× slower).
 */
const MAX_READ = 1 << 20;
/** Largest block status request (a u32 length). */
const MAX_STATUS = 1 << 30;

/** How an `nbds…` URI asks for TLS (libnbd's parameters; its defaults). */
export interface NbdClientTls {
  /** tls-psk-file, with the identity from the URI's user part (default: the login name). */
  psk?: { file: string; identity: string };
  /** tls-certificates: ca-cert.pem, and client-cert.pem + client-key.pem to present. */
  certificates?: string;
  /** tls-verify-peer (default true): check the server's certificate and name. */
  verifyPeer: boolean;
  /** tls-hostname: the name the server certificate must carry (default: the host; localhost on a unix socket). */
  hostname: string;
}

/** Parses `nbd[s]://HOST[:PORT]/NAME` or `nbd[s]+unix:///NAME?socket=PATH`. */
export function parseNbdUri(uri: string): { address: NbdAddress; exportName: string; tls?: NbdClientTls } {
  // `nbds+unix://alice@/…` names a PSK identity with no host, which WHATWG URLs refuse.
  const unixUser = /^(nbds?\+unix:\/\/)([^@/?#]+)@\//i.exec(uri);
  let u: URL;
  try {
    u = new URL(unixUser ? `${unixUser[1]}/${uri.slice(unixUser[0].length)}` : uri);
  } catch {
    throw new InvalidArgumentError(`"${uri}" is not an NBD URI (nbd://HOST:PORT/NAME or nbd+unix:///NAME?socket=PATH)`);
  }
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  const m = /^(nbds?)(\+unix|\+tcp)?:$/.exec(u.protocol);
  if (!m) throw new InvalidArgumentError(`${uri}: unsupported scheme ${u.protocol} (nbd:, nbd+unix:, nbds:, nbds+unix:)`);
  const q = (k: string) => u.searchParams.get(k) ?? undefined;
  let address: NbdAddress;
  if (m[2] === '+unix') {
    const socket = q('socket');
    if (!socket) throw new InvalidArgumentError(`${uri}: ${m[1]}+unix needs ?socket=PATH`);
    address = { socket };
  } else {
    if (!u.hostname) throw new InvalidArgumentError(`${uri}: no host`);
    address = { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port ? Number(u.port) : 10809 };
  }
  if (m[1] === 'nbd') return { address, exportName };
  const pskFile = q('tls-psk-file');
  const certificates = q('tls-certificates');
  if (pskFile && certificates) throw new InvalidArgumentError(`${uri}: give tls-psk-file or tls-certificates, not both`);
  const tlsOpts: NbdClientTls = {
    verifyPeer: !/^(false|0|no|off)$/i.test(q('tls-verify-peer') ?? 'true'),
    hostname: q('tls-hostname') ?? ('host' in address ? address.host : 'localhost'),
    ...(pskFile ? { psk: { file: pskFile, identity: decodeURIComponent(unixUser?.[2] ?? u.username) || os.userInfo().username } } : {}),
    ...(certificates ? { certificates } : {}),
  };
  return { address, exportName, tls: tlsOpts };
}

/** The options of tls.connect for `t`: a PSK callback, or certificates and the CA to check the server with. */
async function tlsConnectOptions(uri: string, t: NbdClientTls): Promise<tls.ConnectionOptions> {
  const read = (file: string, optional: boolean) =>
    readFile(file).catch((e: NodeJS.ErrnoException) => {
      if (optional && e.code === 'ENOENT') return undefined;
      throw new NbdClientError(`${uri}: cannot read ${file} (${e.code ?? e.message})`, { cause: e });
    });
  if (t.psk) {
    const key = parsePskKeys(String(await read(t.psk.file, false)), t.psk.file).get(t.psk.identity);
    if (!key) throw new NbdClientError(`${uri}: ${t.psk.file} has no key for identity "${t.psk.identity}"`);
    const identity = t.psk.identity;
    return { pskCallback: () => ({ identity, psk: key }), checkServerIdentity: () => undefined };
  }
  const dir = t.certificates;
  const ca = dir ? await read(path.join(dir, 'ca-cert.pem'), !t.verifyPeer) : undefined;
  const cert = dir ? await read(path.join(dir, 'client-cert.pem'), true) : undefined;
  const key = dir ? await read(path.join(dir, 'client-key.pem'), true) : undefined;
  return {
    ...(ca ? { ca } : {}),
    ...(cert && key ? { cert, key } : {}),
    servername: net.isIP(t.hostname) ? undefined : t.hostname,
    rejectUnauthorized: t.verifyPeer,
    checkServerIdentity: t.verifyPeer ? (_host, c) => tls.checkServerIdentity(t.hostname, c) : () => undefined,
  };
}

/** One block status descriptor: a length and the context's flags for it. */
export interface StatusRun {
  offset: number;
  length: number;
  flags: number;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  buf?: Uint8Array;
  status?: Map<number, StatusRun[]>;
  error?: Error;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Buffered reading of exact byte counts from a socket. */
class SocketReader {
  #chunks: Buffer[] = [];
  #have = 0;
  #want = 0;
  #wake: (() => void) | undefined;
  #ended: Error | undefined;
  readonly #sock: net.Socket;
  readonly #onData = (d: Buffer) => {
    this.#chunks.push(d);
    this.#have += d.length;
    if (this.#wake && this.#have >= this.#want) this.#wake();
  };
  readonly #onEnd: (e?: Error) => void;
  constructor(sock: net.Socket, name: string) {
    this.#sock = sock;
    this.#onEnd = (e?: Error) => {
      this.#ended ??= new NbdClientError(`${name}: connection closed by the server${e ? ` (${e.message})` : ''}`, { cause: e });
      this.#wake?.();
    };
    sock.on('data', this.#onData);
    sock.on('end', this.#onEnd);
    sock.on('close', this.#onEnd);
    sock.on('error', this.#onEnd);
  }
  /** Stops reading the socket (STARTTLS hands it to TLS); returns how many bytes were left unread. */
  detach(): number {
    this.#sock.pause();
    this.#sock.off('data', this.#onData);
    this.#sock.off('end', this.#onEnd);
    this.#sock.off('close', this.#onEnd);
    this.#sock.off('error', this.#onEnd);
    return this.#have;
  }
  async #need(n: number): Promise<void> {
    while (this.#have < n) {
      if (this.#ended) throw this.#ended;
      this.#want = n;
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = undefined;
    }
  }
  /** The next `n` bytes. */
  async take(n: number): Promise<Buffer> {
    await this.#need(n);
    const first = this.#chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#have -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.#fill(out);
    return out;
  }
  /** The next `dst.length` bytes, into `dst`. */
  async into(dst: Uint8Array): Promise<void> {
    await this.#need(dst.length);
    this.#fill(dst);
  }
  #fill(dst: Uint8Array): void {
    let at = 0;
    while (at < dst.length) {
      const c = this.#chunks[0]!;
      const n = Math.min(c.length, dst.length - at);
      dst.set(n === c.length ? c : c.subarray(0, n), at);
      at += n;
      if (n === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(n);
    }
    this.#have -= dst.length;
  }
}

export interface NbdConnectOptions {
  /** Metadata contexts to ask for besides base:allocation (e.g. qemu:dirty-bitmap:NAME). */
  metaContexts?: string[];
}

export class NbdClient implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly layerCount = 1;
  readonly writable = false;
  readonly exportName: string;
  /** Context name → id, for the contexts the server agreed to. */
  readonly contexts: ReadonlyMap<string, number>;
  readonly #sock: net.Socket;
  readonly #reader: SocketReader;
  readonly #pending = new Map<bigint, Pending>();
  readonly #maxRead: number;
  #cookie = 1n;
  #failed: Error | undefined;
  #closed = false;

  private constructor(name: string, exportName: string, sock: net.Socket, reader: SocketReader, size: number, contexts: Map<string, number>, maxBlock: number) {
    this.name = name;
    this.exportName = exportName;
    this.#sock = sock;
    this.#reader = reader;
    this.size = size;
    this.contexts = contexts;
    this.#maxRead = Math.min(MAX_READ, maxBlock);
    void this.#replies();
  }

  static async connect(uri: string, opts: NbdConnectOptions = {}): Promise<NbdClient> {
    const { address, exportName, tls: tlsWanted } = parseNbdUri(uri);
    const tlsOpts = tlsWanted ? await tlsConnectOptions(uri, tlsWanted) : undefined;
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = 'socket' in address ? net.connect(address.socket) : net.connect(address.port, address.host);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', (e) => reject(new NbdClientError(`${uri}: cannot connect (${e.message})`, { cause: e })));
    });
    sock.setNoDelay(true);
    const conn = { sock, reader: new SocketReader(sock, uri) };
    try {
      const h = await handshake(uri, exportName, conn, [CTX_BASE_ALLOCATION, ...(opts.metaContexts ?? [])], tlsOpts);
      return new NbdClient(uri, exportName, conn.sock, conn.reader, h.size, h.contexts, h.maxBlock);
    } catch (e) {
      conn.sock.destroy();
      sock.destroy();
      throw e;
    }
  }

  /** A request past the export's end would be refused by the server after a round trip: say so here. */
  #check(offset: number, length: number): void {
    checkRange(this.name, offset, length, this.size);
  }

  #send(type: number, offset: number, length: number, p: Omit<Pending, 'type' | 'offset' | 'length' | 'resolve' | 'reject'>): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.#closed) return Promise.reject(new NbdClientError(`${this.name}: closed`));
    const cookie = this.#cookie++;
    const req = Buffer.alloc(28);
    req.writeUInt32BE(REQUEST_MAGIC, 0);
    req.writeUInt16BE(0, 4);
    req.writeUInt16BE(type, 6);
    req.writeBigUInt64BE(cookie, 8);
    req.writeBigUInt64BE(BigInt(offset), 16);
    req.writeUInt32BE(length, 24);
    return new Promise<void>((resolve, reject) => {
      this.#pending.set(cookie, { type, offset, length, ...p, resolve, reject });
      this.#sock.write(req);
    });
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.#check(offset, buf.length);
    const jobs: Promise<void>[] = [];
    for (let at = 0; at < buf.length; at += this.#maxRead) {
      const n = Math.min(this.#maxRead, buf.length - at);
      jobs.push(this.#send(CMD_READ, offset + at, n, { buf: buf.subarray(at, at + n) }));
    }
    await settleAll(jobs);
  }

  /**
   * Block status of [offset, offset+length) for every negotiated context, each list
   * starting at `offset` and covering the same length (at least some of the range: callers
   * loop on what is returned).
   */
  async blockStatus(offset: number, length: number): Promise<Map<string, StatusRun[]>> {
    this.#check(offset, length);
    const status = new Map<number, StatusRun[]>();
    if (length === 0 || this.contexts.size === 0) return new Map();
    await this.#send(CMD_BLOCK_STATUS, offset, Math.min(length, MAX_STATUS), { status });
    // Servers may describe different lengths per context: keep what all of them cover.
    let covered = Infinity;
    for (const runs of status.values()) covered = Math.min(covered, runs.reduce((s, r) => s + r.length, 0));
    if (status.size < this.contexts.size || !(covered > 0)) throw new NbdClientError(`${this.name}: block status at ${offset} returned no descriptors for some context`);
    covered = Math.min(covered, length);
    const out = new Map<string, StatusRun[]>();
    for (const [name, id] of this.contexts) {
      const runs: StatusRun[] = [];
      for (const r of status.get(id)!) {
        if (r.offset >= offset + covered) break;
        runs.push({ offset: r.offset, length: Math.min(r.length, offset + covered - r.offset), flags: r.flags });
      }
      out.set(name, runs);
    }
    return out;
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.#check(offset, length);
    if (!this.contexts.has(CTX_BASE_ALLOCATION)) return length > 0 ? [{ offset, length, kind: 'data', layer: 0 }] : [];
    const out: Extent[] = [];
    for (let at = offset; at < offset + length; ) {
      const runs = (await this.blockStatus(at, offset + length - at)).get(CTX_BASE_ALLOCATION)!;
      for (const r of runs) {
        const kind = r.flags & STATE_ZERO ? (r.flags & STATE_HOLE ? 'hole' : 'zero') : 'data';
        const last = out.at(-1);
        if (last && last.kind === kind) last.length += r.length;
        else out.push({ offset: r.offset, length: r.length, kind, layer: kind === 'hole' ? -1 : 0 });
        at = r.offset + r.length;
      }
    }
    return out;
  }

  /** Reads replies until the connection ends, settling requests by cookie. */
  async #replies(): Promise<void> {
    const rd = this.#reader;
    try {
      for (;;) {
        const head = await rd.take(4);
        const magic = head.readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) {
          const h = await rd.take(12);
          const error = h.readUInt32BE(0);
          const p = this.#take(h.readBigUInt64BE(4));
          if (error === 0 && p.type === CMD_READ) await rd.into(p.buf!);
          this.#settle(p, error === 0 ? undefined : this.#nbdError(p, error, ''));
        } else if (magic === STRUCTURED_REPLY_MAGIC) {
          const h = await rd.take(16);
          const flags = h.readUInt16BE(0);
          const type = h.readUInt16BE(2);
          const cookie = h.readBigUInt64BE(4);
          const len = h.readUInt32BE(12);
          const p = this.#pending.get(cookie);
          if (!p) throw new NbdClientError(`${this.name}: reply for unknown request ${cookie}`);
          await this.#chunk(p, type, len);
          if (flags & REPLY_FLAG_DONE) {
            this.#pending.delete(cookie);
            this.#settle(p, p.error);
          }
        } else {
          throw new NbdClientError(`${this.name}: bad reply magic ${magic.toString(16)}h`);
        }
      }
    } catch (e) {
      this.#failed = this.#closed ? new NbdClientError(`${this.name}: closed`) : (e as Error);
      for (const p of this.#pending.values()) p.reject(this.#failed);
      this.#pending.clear();
    }
  }

  #take(cookie: bigint): Pending {
    const p = this.#pending.get(cookie);
    if (!p) throw new NbdClientError(`${this.name}: reply for unknown request ${cookie}`);
    this.#pending.delete(cookie);
    return p;
  }

  #settle(p: Pending, error: Error | undefined): void {
    if (error) p.reject(error);
    else p.resolve();
  }

  #nbdError(p: Pending, code: number, msg: string): Error {
    return new NbdClientError(`${this.name}: server error ${code} for ${p.type === CMD_READ ? 'read' : 'block status'} of ${p.length} bytes at ${p.offset}${msg ? `: ${msg}` : ''}`);
  }

  async #chunk(p: Pending, type: number, len: number): Promise<void> {
    const rd = this.#reader;
    if (type === REPLY_TYPE_NONE) return;
    if (type === REPLY_TYPE_OFFSET_DATA && p.buf && len >= 8) {
      const at = Number((await rd.take(8)).readBigUInt64BE(0)) - p.offset;
      const n = len - 8;
      if (at < 0 || at + n > p.buf.length) throw new NbdClientError(`${this.name}: read reply data at ${p.offset + at} (+${n}) lies outside the request at ${p.offset} (+${p.length})`);
      await rd.into(p.buf.subarray(at, at + n));
      return;
    }
    if (type === REPLY_TYPE_OFFSET_HOLE && p.buf && len === 12) {
      const h = await rd.take(12);
      const at = Number(h.readBigUInt64BE(0)) - p.offset;
      const n = h.readUInt32BE(8);
      if (at < 0 || at + n > p.buf.length) throw new NbdClientError(`${this.name}: read reply hole at ${p.offset + at} (+${n}) lies outside the request`);
      p.buf.fill(0, at, at + n);
      return;
    }
    if (type === REPLY_TYPE_BLOCK_STATUS && p.status && len >= 4 && (len - 4) % 8 === 0) {
      const d = await rd.take(len);
      const id = d.readUInt32BE(0);
      const runs: StatusRun[] = [];
      let at = p.offset;
      for (let k = 4; k < len; k += 8) {
        const n = d.readUInt32BE(k);
        runs.push({ offset: at, length: n, flags: d.readUInt32BE(k + 4) });
        at += n;
      }
      p.status.set(id, runs);
      return;
    }
    if (type >= 2 ** 15 && len >= 6) {
      const d = await rd.take(len);
      const code = d.readUInt32BE(0);
      const mlen = d.readUInt16BE(4);
      p.error ??= this.#nbdError(p, code, d.subarray(6, 6 + mlen).toString('utf8'));
      return;
    }
    throw new NbdClientError(`${this.name}: unexpected reply chunk type ${type} of ${len} bytes`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#failed && !this.#sock.destroyed) {
      const req = Buffer.alloc(28);
      req.writeUInt32BE(REQUEST_MAGIC, 0);
      req.writeUInt16BE(CMD_DISC, 6);
      // The server closes the connection after a disconnect request; waiting for the write
      // to be handed over is enough.
      await new Promise<void>((r) => this.#sock.end(req, () => r()));
    }
    this.#sock.destroy();
  }
}

function optionHeader(option: number, len: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(len, 12);
  return b;
}

async function optionReply(rd: SocketReader, uri: string, option: number): Promise<{ type: number; data: Buffer }> {
  const h = await rd.take(20);
  if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new NbdClientError(`${uri}: bad option reply magic`);
  if (h.readUInt32BE(8) !== option) throw new NbdClientError(`${uri}: reply to option ${h.readUInt32BE(8)}, expected ${option}`);
  const type = h.readUInt32BE(12);
  const len = h.readUInt32BE(16);
  if (len > 1 << 20) throw new NbdClientError(`${uri}: option reply of ${len} bytes`);
  return { type, data: len ? Buffer.from(await rd.take(len)) : Buffer.alloc(0) };
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

/** Negotiates the export; the first of `wanted` (base:allocation) is optional, the others not. */
async function handshake(
  uri: string,
  exportName: string,
  conn: { sock: net.Socket; reader: SocketReader },
  wanted: string[],
  tlsOpts: tls.ConnectionOptions | undefined,
): Promise<{ size: number; contexts: Map<string, number>; maxBlock: number }> {
  let { sock, reader: rd } = conn;
  const hello = await rd.take(18);
  if (hello.readBigUInt64BE(0) !== NBDMAGIC || hello.readBigUInt64BE(8) !== IHAVEOPT) {
    throw new NbdClientError(`${uri}: not a newstyle NBD server (bad greeting magic)`);
  }
  const sflags = hello.readUInt16BE(16);
  if (!(sflags & FLAG_FIXED_NEWSTYLE)) throw new NbdClientError(`${uri}: the server does not speak fixed newstyle`);
  sock.write(u32(FLAG_C_FIXED_NEWSTYLE | (sflags & FLAG_NO_ZEROES ? FLAG_C_NO_ZEROES : 0)));

  if (tlsOpts) {
    // STARTTLS first, so no option goes out in the clear; a refusal ends it (no silent downgrade).
    sock.write(optionHeader(OPT_STARTTLS, 0));
    const r = await optionReply(rd, uri, OPT_STARTTLS);
    if (r.type !== REP_ACK) throw new NbdClientError(`${uri}: the server refused TLS (error ${r.type - 2 ** 31})${r.data.length ? `: ${r.data.toString('utf8')}` : ''}`);
    if (rd.detach() > 0) throw new NbdClientError(`${uri}: the server sent bytes after accepting STARTTLS`);
    const secure = tls.connect({ ...tlsOpts, socket: sock });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', (e) => reject(new NbdClientError(`${uri}: TLS handshake failed: ${e.message}`, { cause: e })));
    });
    sock = conn.sock = secure;
    rd = conn.reader = new SocketReader(secure, uri);
  }

  sock.write(optionHeader(OPT_STRUCTURED_REPLY, 0));
  const sr = await optionReply(rd, uri, OPT_STRUCTURED_REPLY);
  const structured = sr.type === REP_ACK;
  const contexts = new Map<string, number>();
  if (structured) {
    const body = metaContextRequest(exportName, wanted);
    sock.write(Buffer.concat([optionHeader(OPT_SET_META_CONTEXT, body.length), body]));
    for (;;) {
      const r = await optionReply(rd, uri, OPT_SET_META_CONTEXT);
      if (r.type === REP_META_CONTEXT) contexts.set(r.data.subarray(4).toString('utf8'), r.data.readUInt32BE(0));
      else break;
    }
  }
  const go = exportInfoRequest(exportName, [INFO_BLOCK_SIZE]);
  sock.write(Buffer.concat([optionHeader(OPT_GO, go.length), go]));
  let size = -1;
  let maxBlock = 32 << 20;
  for (;;) {
    const r = await optionReply(rd, uri, OPT_GO);
    if (r.type === REP_ACK) break;
    if (r.type === REP_INFO) {
      const info = r.data.readUInt16BE(0);
      if (info === INFO_EXPORT) size = Number(r.data.readBigUInt64BE(2));
      else if (info === INFO_BLOCK_SIZE) maxBlock = r.data.readUInt32BE(10);
      continue;
    }
    if (r.type >= 2 ** 31) {
      const msg = r.data.toString('utf8');
      if (r.type === REP_ERR_UNKNOWN) throw new NbdClientError(`${uri}: the server has no export named "${exportName}"${msg ? ` (${msg})` : ''}`);
      throw new NbdClientError(`${uri}: the server refused export "${exportName}" (error ${r.type - 2 ** 31})${msg ? `: ${msg}` : ''}`);
    }
  }
  if (size < 0) throw new NbdClientError(`${uri}: the server sent no export size`);
  for (const w of wanted.slice(1)) {
    if (!contexts.has(w)) throw new NbdClientError(`${uri}: the server does not offer the metadata context "${w}"${structured ? '' : ' (no structured replies)'}`);
  }
  return { size, contexts, maxBlock };
}
