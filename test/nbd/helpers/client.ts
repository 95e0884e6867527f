/**
 * A raw NBD client for protocol tests: every byte it sends is chosen by the test, so it can
 * also send what a well-behaved client never would (bad magic, truncated frames, floods).
 */
import net from 'node:net';
import tls from 'node:tls';
import { exportInfoRequest, metaContextRequest } from '../../../src/nbd/options.ts';

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const REPLY_MAGIC = 0x3e889045565a9n;
export const REQ_MAGIC = 0x25609513;
export const SIMPLE_MAGIC = 0x67446698;
export const CHUNK_MAGIC = 0x668e33ef;

export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 } as const;
export const REP = { ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4, ERR_UNSUP: 2 ** 31 + 1, ERR_POLICY: 2 ** 31 + 2, ERR_INVALID: 2 ** 31 + 3, ERR_TLS_REQD: 2 ** 31 + 5, ERR_UNKNOWN: 2 ** 31 + 6, ERR_SHUTDOWN: 2 ** 31 + 7 } as const;
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const CF = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;
export const ERR = { EPERM: 1, EIO: 5, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;
export const TF = { HAS_FLAGS: 1, READ_ONLY: 2, SEND_FLUSH: 4, SEND_FUA: 8, SEND_TRIM: 32, SEND_WRITE_ZEROES: 64, SEND_DF: 128, CAN_MULTI_CONN: 256, SEND_CACHE: 1024, SEND_FAST_ZERO: 2048 } as const;

export type Addr = { socket: string } | { host: string; port: number };

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface Chunk {
  flags: number;
  type: number;
  cookie: bigint;
  data: Buffer;
}

export type Reply = { kind: 'simple'; error: number; cookie: bigint; data: Buffer } | ({ kind: 'chunk' } & Chunk);

/** A finished request: error (0 = ok), the data of a read, block status chunks. */
export interface Result {
  error: number;
  message?: string;
  data?: Buffer;
  chunks: Chunk[];
}

export class RawClient {
  /** The plain socket, or the TLS socket after startTls. */
  socket: net.Socket;
  #buf: Buffer = Buffer.alloc(0);
  #wait: (() => void) | undefined;
  #ended = false;
  structured = false;
  size = 0;
  flags = 0;
  #cookie = 1n;
  /** Expected read lengths of pending simple-reply reads, by cookie. */
  #readLens = new Map<bigint, number>();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#attach(socket);
  }

  #attach(socket: net.Socket): void {
    socket.on('data', (d: Buffer) => {
      this.#buf = this.#buf.length ? Buffer.concat([this.#buf, d]) : d;
      this.#wake();
    });
    socket.on('end', () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on('error', () => {});
  }

  /**
   * NBD_OPT_STARTTLS, then the client side of TLS over the same socket (`opts` as for
   * tls.connect: pskCallback, ca, cert, key…). Resolves with the option's reply; TLS runs
   * only when it was an ACK. Rejects when the TLS handshake fails.
   */
  async startTls(opts: tls.ConnectionOptions): Promise<OptionReply> {
    this.sendOption(OPT.STARTTLS);
    const r = await this.optionReply();
    if (r.type !== REP.ACK) return r;
    if (this.#buf.length) throw new Error('server sent bytes after the STARTTLS ACK');
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('end');
    plain.removeAllListeners('close');
    const secure = tls.connect({ ...opts, socket: plain });
    this.socket = secure;
    this.#attach(secure);
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
      secure.once('close', () => reject(new Error('closed during the TLS handshake')));
    });
    return r;
  }

  static connect(addr: Addr): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = 'socket' in addr ? net.connect(addr.socket) : net.connect(addr.port, addr.host);
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  #wake(): void {
    const w = this.#wait;
    this.#wait = undefined;
    w?.();
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.#buf.length;
  }

  /** Resolves with exactly n bytes, or rejects when the server closes first. */
  async readExactly(n: number): Promise<Buffer> {
    while (this.#buf.length < n) {
      if (this.#ended) throw new Error(`connection closed with ${this.#buf.length}/${n} bytes`);
      await new Promise<void>((r) => (this.#wait = r));
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Resolves true once the server has closed the connection (and nothing else arrives). */
  async closedByServer(): Promise<boolean> {
    while (!this.#ended) await new Promise<void>((r) => (this.#wait = r));
    return true;
  }

  send(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  close(): void {
    this.socket.destroy();
  }

  // ---- handshake ----

  async greeting(): Promise<number> {
    const g = await this.readExactly(18);
    if (g.readBigUInt64BE(0) !== NBDMAGIC || g.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('bad greeting');
    return g.readUInt16BE(16);
  }

  sendClientFlags(flags: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(flags);
    this.send(b);
  }

  sendOption(option: number, data: Uint8Array = Buffer.alloc(0), magic = IHAVEOPT): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(magic, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.send(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<OptionReply> {
    const h = await this.readExactly(20);
    if (h.readBigUInt64BE(0) !== REPLY_MAGIC) throw new Error('bad option reply magic');
    const len = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: Buffer.from(await this.readExactly(len)) };
  }

  /** Sends an option and collects replies up to the final one (ACK or an error). */
  async option(option: number, data?: Uint8Array): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === REP.ACK || r.type >= 2 ** 31) return out;
    }
  }

  /** Greeting + fixed-newstyle flags + optional structured replies and contexts + GO. */
  async handshake(opts: { name?: string; structured?: boolean; contexts?: string[]; infos?: number[]; skipGreeting?: boolean } = {}): Promise<void> {
    if (!opts.skipGreeting) {
      await this.greeting();
      this.sendClientFlags(1);
    }
    if (opts.structured || opts.contexts) {
      const r = await this.option(OPT.STRUCTURED_REPLY);
      if (r.at(-1)!.type !== REP.ACK) throw new Error('structured replies refused');
      this.structured = true;
    }
    if (opts.contexts) {
      const r = await this.option(OPT.SET_META, metaRequest(opts.name ?? '', opts.contexts));
      if (r.at(-1)!.type !== REP.ACK) throw new Error('SET_META_CONTEXT failed');
    }
    const replies = await this.option(OPT.GO, infoRequest(opts.name ?? '', opts.infos ?? []));
    const last = replies.at(-1)!;
    if (last.type !== REP.ACK) throw new Error(`GO failed: ${last.type - 2 ** 31} ${last.data.toString()}`);
    const exp = replies.find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === 0)!;
    this.size = Number(exp.data.readBigUInt64BE(2));
    this.flags = exp.data.readUInt16BE(10);
  }

  // ---- transmission ----

  /** Sends one request (with payload for writes); returns its cookie. */
  request(type: number, offset: number, length: number, opts: { flags?: number; payload?: Uint8Array; cookie?: bigint; magic?: number } = {}): bigint {
    const cookie = opts.cookie ?? this.#cookie++;
    this.send(requestBytes(type, offset, length, { ...opts, cookie }));
    if (type === CMD.READ) this.#readLens.set(cookie, length);
    return cookie;
  }

  /** Reads the next reply message (a simple reply or one structured chunk). */
  async reply(): Promise<Reply> {
    const magic = (await this.readExactly(4)).readUInt32BE(0);
    if (magic === SIMPLE_MAGIC) {
      const h = await this.readExactly(12);
      const error = h.readUInt32BE(0);
      const cookie = h.readBigUInt64BE(4);
      const want = this.#readLens.get(cookie);
      this.#readLens.delete(cookie);
      const data = want !== undefined && error === 0 && !this.structured ? Buffer.from(await this.readExactly(want)) : Buffer.alloc(0);
      return { kind: 'simple', error, cookie, data };
    }
    if (magic === CHUNK_MAGIC) {
      const h = await this.readExactly(16);
      const len = h.readUInt32BE(12);
      return { kind: 'chunk', flags: h.readUInt16BE(0), type: h.readUInt16BE(2), cookie: h.readBigUInt64BE(4), data: Buffer.from(await this.readExactly(len)) };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** Collects whole replies until `cookies` are all done; returns them by cookie. */
  async collect(cookies: Iterable<bigint>): Promise<Map<bigint, Result>> {
    const want = new Set(cookies);
    const out = new Map<bigint, Result>();
    const partial = new Map<bigint, Result & { len?: number; offset?: number }>();
    while (want.size > 0) {
      const r = await this.reply();
      if (!want.has(r.cookie)) throw new Error(`reply for unexpected cookie ${r.cookie}`);
      if (r.kind === 'simple') {
        out.set(r.cookie, { error: r.error, data: r.data, chunks: [] });
        want.delete(r.cookie);
        continue;
      }
      const res = partial.get(r.cookie) ?? { error: 0, chunks: [] };
      partial.set(r.cookie, res);
      res.chunks.push(r);
      if (r.type >= 2 ** 15) {
        res.error = r.data.readUInt32BE(0);
        res.message = r.data.toString('utf8', 6, 6 + r.data.readUInt16BE(4));
      }
      if (r.flags & 1) {
        want.delete(r.cookie);
        partial.delete(r.cookie);
        out.set(r.cookie, res);
      }
    }
    return out;
  }

  async run(type: number, offset: number, length: number, opts: { flags?: number; payload?: Uint8Array } = {}): Promise<Result> {
    const c = this.request(type, offset, length, opts);
    const res = (await this.collect([c])).get(c)!;
    if (type === CMD.READ && this.structured && res.error === 0) res.data = assemble(res.chunks, offset, length);
    return res;
  }

  read(offset: number, length: number, flags = 0): Promise<Result> {
    return this.run(CMD.READ, offset, length, { flags });
  }

  write(offset: number, payload: Uint8Array, flags = 0): Promise<Result> {
    return this.run(CMD.WRITE, offset, payload.length, { flags, payload });
  }

  disconnect(): void {
    this.request(CMD.DISC, 0, 0);
  }
}

export function requestBytes(type: number, offset: number, length: number, opts: { flags?: number; payload?: Uint8Array; cookie: bigint; magic?: number }): Buffer {
  const p = opts.payload ?? Buffer.alloc(0);
  const b = Buffer.alloc(28 + p.length);
  b.writeUInt32BE(opts.magic ?? REQ_MAGIC, 0);
  b.writeUInt16BE(opts.flags ?? 0, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(opts.cookie, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  b.set(p, 28);
  return b;
}

/** Rebuilds a read from structured chunks, checking they tile the request exactly once. */
export function assemble(chunks: Chunk[], offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  const covered = new Uint8Array(length);
  for (const c of chunks) {
    let at: number;
    let n: number;
    if (c.type === 1) {
      at = Number(c.data.readBigUInt64BE(0)) - offset;
      n = c.data.length - 8;
      c.data.copy(out, at, 8);
    } else if (c.type === 2) {
      at = Number(c.data.readBigUInt64BE(0)) - offset;
      n = c.data.readUInt32BE(8);
    } else if (c.type === 0) continue;
    else throw new Error(`unexpected chunk type ${c.type} in a read`);
    if (at < 0 || at + n > length || n <= 0) throw new Error(`chunk [${at}, ${at + n}) outside the read`);
    for (let i = at; i < at + n; i++) {
      if (covered[i]) throw new Error(`chunks overlap at ${offset + i}`);
      covered[i] = 1;
    }
  }
  if (covered.indexOf(0) >= 0) throw new Error(`read not fully covered (first gap at ${offset + covered.indexOf(0)})`);
  return out;
}

/** The option payloads come from the product's one encoder (src/nbd/options.ts). */
export const infoRequest = exportInfoRequest;
export const metaRequest = metaContextRequest;

/** Parses a BLOCK_STATUS chunk: context id and [length, flags] pairs. */
export function statusOf(c: Chunk): { id: number; extents: [number, number][] } {
  const id = c.data.readUInt32BE(0);
  const extents: [number, number][] = [];
  for (let at = 4; at < c.data.length; at += 8) extents.push([c.data.readUInt32BE(at), c.data.readUInt32BE(at + 4)]);
  return { id, extents };
}
