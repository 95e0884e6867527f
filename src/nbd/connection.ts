/**
 * One client connection: the handshake, then the transmission phase. Requests are framed
 * straight out of the received chunks, run concurrently against the device and answered
 * as they complete (out of order). Replies finishing in the same turn of the event loop go
 * out in one writev (cork). When too many requests or reply bytes are outstanding the
 * socket is paused, so a client that floods requests or stops reading cannot make the
 * server buffer without bound.
 */
import type { Socket } from 'node:net';
import type { BlockDevice } from '../io/types.ts';
import type { DeviceOps, OpKind } from '../ops/device-ops.ts';
import { NbdDisconnect } from './errors.ts';
import type { ExportTable, ResolvedExport } from './exports.ts';
import { negotiate } from './handshake.ts';
import { InputQueue } from './input.ts';
import {
  CHUNK_HEADER_SIZE,
  CMD_BLOCK_STATUS,
  CMD_CACHE,
  CMD_DISC,
  CMD_FLAG_DF,
  CMD_FLAG_FAST_ZERO,
  CMD_FLAG_FUA,
  CMD_FLAG_NO_HOLE,
  CMD_FLAG_REQ_ONE,
  CMD_FLUSH,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOTSUP,
  NBD_ESHUTDOWN,
  PREFERRED_BLOCK,
  REPLY_FLAG_DONE,
  REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
  REQUEST_MAGIC,
  REQUEST_SIZE,
  SIMPLE_REPLY_SIZE,
  nbdErrorOf,
} from './protocol.ts';
import { errorChunk, putChunkHeader, putSimpleReply, putU64, simpleReply } from './replies.ts';
import { BufferPool } from './pool.ts';
import { planRead, statusReply } from './status.ts';
import type { NbdTls } from './tls.ts';

/** Write flags, shared by every write (no object per request). */
const FUA = Object.freeze({ fua: true });
const NO_FUA = Object.freeze({});

export interface ConnectionLimits {
  /** Requests running at once on one connection before the socket is paused. */
  maxInFlight: number;
  /** Payload bytes (read + write) of running requests before the socket is paused. */
  maxInFlightBytes: number;
  /** Reply bytes queued on the socket before the socket is paused. */
  maxBufferedBytes: number;
  /** Largest READ/WRITE/CACHE length; advertised as the maximum block size. */
  maxPayload: number;
  maxOptionLength: number;
  /** A client that has not finished the handshake by then is dropped (0: never). */
  handshakeTimeoutMs: number;
  /** Most descriptors in one block status chunk. */
  maxDescriptors: number;
}

export type NbdEvent =
  | { type: 'connect'; connection: number; remote: string }
  | { type: 'tls'; connection: number; peer: string }
  | { type: 'ready'; connection: number; export: string; structured: boolean; flags: number; tls: boolean }
  | { type: 'disconnect'; connection: number; reason: string }
  | { type: 'protocol-error'; connection: number; message: string }
  | { type: 'io-error'; connection: number; export: string; command: string; offset: number; length: number; error: unknown };

export interface ConnectionHooks {
  emit(e: NbdEvent): void;
  shuttingDown(): boolean;
  /** Why this connection gets nothing but refusals in the handshake, if it does. */
  refusal?: string;
  /** Large read replies come from here and go back once written. */
  pool: BufferPool;
  /** TLS offered to clients (STARTTLS); none: NOTLS mode. */
  tls?: NbdTls;
}

const HANDSHAKE = 0;
const TRANSMISSION = 1;
const CLOSING = 2;
const CLOSED = 3;

/** Block status looks at most this far per request (clients ask again for the rest). */
const STATUS_MAX = 1024 * 1024 * 1024;
/** Reads at least this long ask the device for extents so holes go out as hole chunks. */
const SPARSE_READ_MIN = 64 * 1024;
const COMMAND_NAMES = ['READ', 'WRITE', 'DISC', 'FLUSH', 'TRIM', 'CACHE', 'WRITE_ZEROES', 'BLOCK_STATUS'];

/** The operation each command's range and read-only checks are those of. */
const OP_OF: OpKind[] = [];
OP_OF[CMD_READ] = 'read';
OP_OF[CMD_TRIM] = 'trim';
OP_OF[CMD_CACHE] = 'cache';
OP_OF[CMD_WRITE_ZEROES] = 'zero';
OP_OF[CMD_BLOCK_STATUS] = 'extents';

/** Flags each command accepts (FUA is valid on every command once advertised). */
const ALLOWED_FLAGS: number[] = [];
ALLOWED_FLAGS[CMD_READ] = CMD_FLAG_FUA | CMD_FLAG_DF;
ALLOWED_FLAGS[CMD_WRITE] = CMD_FLAG_FUA;
ALLOWED_FLAGS[CMD_FLUSH] = CMD_FLAG_FUA;
ALLOWED_FLAGS[CMD_TRIM] = CMD_FLAG_FUA;
ALLOWED_FLAGS[CMD_CACHE] = CMD_FLAG_FUA;
ALLOWED_FLAGS[CMD_WRITE_ZEROES] = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO;
ALLOWED_FLAGS[CMD_BLOCK_STATUS] = CMD_FLAG_FUA | CMD_FLAG_REQ_ONE;

export class NbdConnection {
  readonly id: number;
  /** Settles when the socket has closed. */
  readonly closed: Promise<void>;
  /** The plain socket, then the TLS socket wrapping it once STARTTLS succeeded. */
  #socket: Socket;
  #secure = false;
  readonly #exports: ExportTable;
  readonly #limits: ConnectionLimits;
  readonly #hooks: ConnectionHooks;
  readonly #queue = new InputQueue();
  readonly #scratch = Buffer.allocUnsafe(REQUEST_SIZE);
  #resolveClosed!: () => void;
  #phase = HANDSHAKE;
  #reason = 'closed by peer';
  #timer: NodeJS.Timeout | undefined;

  // Negotiated state.
  #exp: ResolvedExport | undefined;
  #dev: BlockDevice | undefined;
  #ops: DeviceOps | undefined;
  #structured = false;
  #ctxBase = false;
  #ctxDepth = false;

  // Flow control.
  #inflight = 0;
  #inflightBytes = 0;
  #pumping = false;
  #paused = false;
  #corked = false;
  /** The client sent DISC: answer what is running, then close. */
  #draining = false;
  /** The client half-closed: serve what it sent, then close. */
  #eof = false;
  #shutdown = false;

  // A WRITE whose payload is still arriving (-1: none).
  #payload = -1;
  #pFlags = 0;
  #pHi = 0;
  #pLo = 0;
  #pOffset = 0;
  /** Payload bytes of a refused WRITE still to be read and dropped. */
  #discard = 0;

  constructor(socket: Socket, id: number, exports: ExportTable, limits: ConnectionLimits, hooks: ConnectionHooks) {
    this.#socket = socket;
    this.id = id;
    this.#exports = exports;
    this.#limits = limits;
    this.#hooks = hooks;
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
  }

  /** The export chosen by the client, once the handshake is done. */
  get exportName(): string | undefined {
    return this.#exp?.name;
  }

  start(): void {
    const s = this.#socket;
    s.setNoDelay(true);
    this.#listen(s);
    this.#hooks.emit({ type: 'connect', connection: this.id, remote: s.remoteAddress ? `${s.remoteAddress}:${s.remotePort}` : 'unix socket' });
    if (this.#limits.handshakeTimeoutMs > 0) {
      this.#timer = setTimeout(() => this.#abort('handshake timed out'), this.#limits.handshakeTimeoutMs);
      this.#timer.unref();
    }
    void this.#handshake();
  }

  /**
   * Server shutdown: a client still negotiating is dropped; in transmission, running
   * requests finish, new ones get ESHUTDOWN, then the socket closes.
   */
  shutdown(): Promise<void> {
    this.#shutdown = true;
    if (this.#phase === HANDSHAKE) this.#destroy('server shutting down');
    else if (this.#phase === TRANSMISSION) this.#pump();
    return this.closed;
  }

  /** Closes the socket at once (shutdown timeout). */
  destroy(reason: string): void {
    this.#destroy(reason);
  }

  // ---- socket events ----

  #listen(s: Socket): void {
    s.on('data', this.#onData);
    s.on('end', this.#onEnd);
    s.on('drain', this.#onDrain);
    s.on('error', this.#onError);
    s.on('close', this.#onClose);
  }

  #unlisten(s: Socket): void {
    s.off('data', this.#onData);
    s.off('end', this.#onEnd);
    s.off('drain', this.#onDrain);
    s.off('error', this.#onError);
    s.off('close', this.#onClose);
  }

  #onError = (e: Error): void => {
    this.#reason = e.message;
  };

  #onData = (chunk: Buffer): void => {
    this.#queue.push(chunk);
    if (this.#phase === TRANSMISSION) this.#pump();
    else if (this.#phase === HANDSHAKE && this.#queue.length > this.#limits.maxOptionLength + 64 && !this.#paused) {
      // A client pushing options faster than it reads replies: stop reading until caught up.
      this.#paused = true;
      this.#socket.pause();
    }
  };

  #onEnd = (): void => {
    this.#queue.end(new NbdDisconnect('client closed the connection'));
    if (this.#phase === TRANSMISSION) {
      this.#eof = true;
      this.#pump();
    } else if (this.#phase === HANDSHAKE) this.#destroy('client closed the connection during the handshake');
  };

  #onDrain = (): void => {
    if (this.#phase === TRANSMISSION) this.#pump();
  };

  #onClose = (): void => {
    this.#phase = CLOSED;
    if (this.#timer) clearTimeout(this.#timer);
    this.#queue.end(new NbdDisconnect('connection closed'));
    this.#hooks.emit({ type: 'disconnect', connection: this.id, reason: this.#reason });
    this.#resolveClosed();
  };

  // ---- handshake ----

  async #handshake(): Promise<void> {
    try {
      const result = await negotiate(
        {
          read: async (n) => {
            const buf = await this.#queue.read(n);
            if (this.#paused && this.#queue.length <= this.#limits.maxOptionLength) {
              this.#paused = false;
              this.#socket.resume();
            }
            return buf;
          },
          write: (buf) => {
            if (this.#phase === HANDSHAKE) this.#socket.write(buf);
          },
          startTls: this.#hooks.tls ? (ack) => this.#startTls(this.#hooks.tls!, ack) : undefined,
        },
        {
          tls: this.#hooks.tls?.mode ?? 'off',
          exports: this.#exports,
          maxPayload: this.#limits.maxPayload,
          maxOptionLength: this.#limits.maxOptionLength,
          shuttingDown: () => this.#shutdown || this.#hooks.shuttingDown(),
          refusal: () => this.#hooks.refusal,
        },
      );
      if (this.#phase !== HANDSHAKE) return;
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = undefined;
      if (!result) {
        this.#close('client aborted the handshake');
        return;
      }
      this.#exp = result.export;
      this.#dev = result.export.device;
      this.#ops = result.export.ops;
      this.#structured = result.structured;
      this.#ctxBase = result.baseAllocation;
      this.#ctxDepth = result.allocationDepth;
      this.#phase = TRANSMISSION;
      this.#hooks.emit({ type: 'ready', connection: this.id, export: result.export.name, structured: result.structured, flags: result.flags, tls: this.#secure });
      if (this.#paused) {
        this.#paused = false;
        this.#socket.resume();
      }
      this.#pump();
    } catch (e) {
      if (this.#phase !== HANDSHAKE) return;
      const msg = e instanceof Error ? e.message : String(e);
      this.#hooks.emit({ type: 'protocol-error', connection: this.id, message: msg });
      this.#destroy(msg);
    }
  }

  /**
   * STARTTLS was accepted: sends the ACK, then hands the socket to TLS once the ACK (and
   * every reply before it) has left. A client must wait for the ACK before its TLS hello,
   * so bytes already received after the option are an injection attempt and end the session.
   */
  async #startTls(t: NbdTls, ack: Uint8Array): Promise<void> {
    if (this.#queue.length > 0) throw new NbdDisconnect(`${this.#queue.length} bytes sent after NBD_OPT_STARTTLS before its reply`);
    const raw = this.#socket;
    // Paused, the raw socket keeps what arrives for the TLS socket to pick up.
    raw.pause();
    await new Promise<void>((resolve, reject) =>
      raw.write(ack, (e) => {
        if (e) reject(new NbdDisconnect(`STARTTLS: ${e.message}`));
        else resolve();
      }),
    );
    if (this.#phase !== HANDSHAKE) throw new NbdDisconnect('connection closed during STARTTLS');
    if (this.#queue.length > 0) throw new NbdDisconnect(`${this.#queue.length} bytes sent after NBD_OPT_STARTTLS before its reply`);
    this.#unlisten(raw);
    const { socket, secured } = t.wrap(raw);
    this.#socket = socket;
    this.#listen(socket);
    this.#paused = false;
    const peer = await secured;
    this.#secure = true;
    this.#hooks.emit({ type: 'tls', connection: this.id, peer });
  }

  // ---- transmission: framing and flow control ----

  #blocked(): boolean {
    return (
      this.#inflight >= this.#limits.maxInFlight ||
      this.#inflightBytes >= this.#limits.maxInFlightBytes ||
      this.#socket.writableLength >= this.#limits.maxBufferedBytes
    );
  }

  #pump(): void {
    if (this.#pumping || this.#phase !== TRANSMISSION) return;
    this.#pumping = true;
    try {
      const q = this.#queue;
      while (this.#phase === TRANSMISSION && !this.#draining) {
        if (this.#discard > 0) {
          this.#discard -= q.skip(this.#discard);
          if (this.#discard > 0) break;
          continue;
        }
        if (this.#payload >= 0) {
          if (q.length < this.#payload) break;
          const data = q.take(this.#payload);
          this.#payload = -1;
          this.#startWrite(this.#pFlags, this.#pHi, this.#pLo, this.#pOffset, data);
          continue;
        }
        if (q.length < REQUEST_SIZE || this.#blocked()) break;
        const { buf, at } = q.peek(REQUEST_SIZE, this.#scratch);
        const magic = buf.readUInt32BE(at);
        if (magic !== REQUEST_MAGIC) {
          this.#protocolError(`bad request magic 0x${magic.toString(16).padStart(8, '0')}`);
          return;
        }
        const flags = buf.readUInt16BE(at + 4);
        const type = buf.readUInt16BE(at + 6);
        const cHi = buf.readUInt32BE(at + 8);
        const cLo = buf.readUInt32BE(at + 12);
        const oHi = buf.readUInt32BE(at + 16);
        const oLo = buf.readUInt32BE(at + 20);
        const len = buf.readUInt32BE(at + 24);
        q.skip(REQUEST_SIZE);
        // Offsets of 2^53 and more are not exact numbers, and lie past any export anyway.
        const offset = oHi >= 0x200000 ? Number.MAX_SAFE_INTEGER : oHi * 4294967296 + oLo;
        if (type === CMD_WRITE) {
          if (len > this.#limits.maxPayload) {
            // The payload is read and dropped as it arrives (never buffered), so the next request is framed right.
            this.#replyError(cHi, cLo, NBD_EINVAL, `write of ${len} bytes exceeds the maximum payload ${this.#limits.maxPayload}`);
            this.#discard = len;
            continue;
          }
          this.#pFlags = flags;
          this.#pHi = cHi;
          this.#pLo = cLo;
          this.#pOffset = offset;
          this.#payload = len;
          continue;
        }
        this.#dispatch(type, flags, cHi, cLo, offset, len);
      }
    } finally {
      this.#pumping = false;
    }
    this.#flow();
  }

  /** Pauses or resumes reading; closes once no more input will be served and nothing runs. */
  #flow(): void {
    if (this.#phase !== TRANSMISSION) return;
    const inputDone = this.#draining || this.#shutdown || (this.#eof && !this.#parsable());
    if (inputDone && this.#inflight === 0) {
      void this.#finish();
      return;
    }
    const stop = this.#draining || this.#blocked();
    if (stop && !this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    } else if (!stop && this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  /** Whether the queue holds a whole request (or the rest of a write payload). */
  #parsable(): boolean {
    if (this.#discard > 0) return false;
    return this.#queue.length >= (this.#payload >= 0 ? this.#payload : REQUEST_SIZE);
  }

  #begin(bytes: number): void {
    this.#inflight++;
    this.#inflightBytes += bytes;
  }

  #end(bytes: number): void {
    this.#inflight--;
    this.#inflightBytes -= bytes;
    if (!this.#pumping) this.#pump();
  }

  /**
   * Sends `buf`; replies finishing in the same event-loop turn leave in one writev. A
   * `pooled` buffer goes back to the pool once the socket no longer needs it.
   */
  #send(buf: Buffer, pooled = false): void {
    const pool = this.#hooks.pool;
    if (this.#phase !== TRANSMISSION || this.#socket.destroyed) {
      if (pooled) pool.put(buf);
      return;
    }
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      setImmediate(this.#uncork);
    }
    if (pooled) this.#socket.write(buf, () => pool.put(buf));
    else this.#socket.write(buf);
  }

  #uncork = (): void => {
    this.#corked = false;
    if (!this.#socket.destroyed) this.#socket.uncork();
  };

  #replyOk(cHi: number, cLo: number): void {
    this.#send(simpleReply(0, cHi, cLo));
  }

  #replyError(cHi: number, cLo: number, error: number, message: string): void {
    this.#send(this.#structured ? errorChunk(error, cHi, cLo, message) : simpleReply(error, cHi, cLo));
  }

  #ioError(command: number, cHi: number, cLo: number, offset: number, length: number, e: unknown): void {
    const error = nbdErrorOf(e);
    this.#replyError(cHi, cLo, error, e instanceof Error ? e.message : String(e));
    this.#hooks.emit({
      type: 'io-error',
      connection: this.id,
      export: this.#exp!.name,
      command: COMMAND_NAMES[command] ?? String(command),
      offset,
      length,
      error: e,
    });
  }

  // ---- transmission: commands ----

  #dispatch(type: number, flags: number, cHi: number, cLo: number, offset: number, len: number): void {
    if (type === CMD_DISC) {
      this.#draining = true;
      return;
    }
    if (this.#shutdown) {
      this.#replyError(cHi, cLo, NBD_ESHUTDOWN, 'server is shutting down');
      return;
    }
    const allowed = ALLOWED_FLAGS[type];
    if (allowed === undefined) {
      this.#replyError(cHi, cLo, NBD_EINVAL, `unknown command ${type}`);
      return;
    }
    if ((flags & ~allowed) !== 0 || (flags & CMD_FLAG_DF && !this.#structured)) {
      this.#replyError(cHi, cLo, NBD_EINVAL, `flags 0x${flags.toString(16)} are not valid for ${COMMAND_NAMES[type]}`);
      return;
    }
    const ops = this.#ops!;
    const fua = (flags & CMD_FLAG_FUA) !== 0;
    switch (type) {
      case CMD_READ:
        if (this.#refused(OP_OF[type]!, cHi, cLo, offset, len)) return;
        if (len > this.#limits.maxPayload) return this.#tooLong(cHi, cLo, len);
        return void this.#run(type, cHi, cLo, offset, len, len, () => this.#read(flags, cHi, cLo, offset, len));
      case CMD_FLUSH:
        return void this.#run(type, cHi, cLo, 0, 0, 0, () => ops.flush());
      case CMD_TRIM:
        if (this.#refused(OP_OF[type]!, cHi, cLo, offset, len)) return;
        return void this.#run(type, cHi, cLo, offset, len, 0, () => ops.trim(offset, len, { fua }));
      case CMD_WRITE_ZEROES: {
        if (this.#refused(OP_OF[type]!, cHi, cLo, offset, len)) return;
        const mayTrim = !(flags & CMD_FLAG_NO_HOLE);
        if (flags & CMD_FLAG_FAST_ZERO && !ops.fastZero(mayTrim)) return this.#replyError(cHi, cLo, NBD_ENOTSUP, 'zeroing without holes is no faster than writing');
        return void this.#run(type, cHi, cLo, offset, len, 0, () => ops.zero(offset, len, { mayTrim, fua }));
      }
      case CMD_CACHE:
        if (this.#refused(OP_OF[type]!, cHi, cLo, offset, len)) return;
        if (len > this.#limits.maxPayload) return this.#tooLong(cHi, cLo, len);
        return void this.#run(type, cHi, cLo, offset, len, 0, () => ops.cache(offset, len));
      case CMD_BLOCK_STATUS:
        if (!this.#ctxBase && !this.#ctxDepth) return this.#replyError(cHi, cLo, NBD_EINVAL, 'no metadata context was selected');
        if (len === 0) return this.#replyError(cHi, cLo, NBD_EINVAL, 'block status of an empty range');
        if (this.#refused(OP_OF[type]!, cHi, cLo, offset, len)) return;
        return void this.#run(type, cHi, cLo, offset, len, 0, () => this.#blockStatus(flags, cHi, cLo, offset, len));
    }
  }

  /** Answers a request the operations would refuse (range, read-only) without running it. */
  #refused(kind: OpKind, cHi: number, cLo: number, offset: number, len: number): boolean {
    const bad = this.#ops!.refusal(kind, offset, len);
    if (bad) this.#replyError(cHi, cLo, nbdErrorOf(bad), bad.message);
    return bad !== undefined;
  }

  #tooLong(cHi: number, cLo: number, len: number): void {
    this.#replyError(cHi, cLo, NBD_EINVAL, `length ${len} exceeds the maximum payload ${this.#limits.maxPayload}`);
  }

  /**
   * The one frame every command runs in: counted as in flight, failures answered with their
   * errno and reported, the slot given back whatever happens. `work` sends the reply of a
   * command that returns data; the others get a plain OK.
   */
  async #run(command: number, cHi: number, cLo: number, offset: number, len: number, bytes: number, work: () => Promise<void | true>): Promise<void> {
    this.#begin(bytes);
    try {
      if ((await work()) !== true) this.#replyOk(cHi, cLo);
    } catch (e) {
      this.#ioError(command, cHi, cLo, offset, len, e);
    } finally {
      this.#end(bytes);
    }
  }

  /** Sends the read's reply itself (true: no plain OK). */
  async #read(flags: number, cHi: number, cLo: number, offset: number, len: number): Promise<true> {
    if (!this.#structured) {
      const out = this.#hooks.pool.get(SIMPLE_REPLY_SIZE + len);
      putSimpleReply(out, 0, 0, cHi, cLo);
      try {
        if (len > 0) await this.#ops!.read(out.subarray(SIMPLE_REPLY_SIZE), offset);
      } catch (e) {
        this.#hooks.pool.put(out);
        throw e;
      }
      this.#send(out, true);
    } else if (len === 0) {
      const out = Buffer.allocUnsafe(CHUNK_HEADER_SIZE);
      putChunkHeader(out, 0, REPLY_FLAG_DONE, REPLY_TYPE_NONE, cHi, cLo, 0);
      this.#send(out);
    } else if (len < SPARSE_READ_MIN || flags & CMD_FLAG_DF) {
      this.#send(await this.#dataChunk(cHi, cLo, offset, len, true), true);
    } else {
      await this.#sparseRead(cHi, cLo, offset, len);
    }
    return true;
  }

  /** One OFFSET_DATA chunk (a pooled buffer) holding the device bytes of [offset, offset+len). */
  async #dataChunk(cHi: number, cLo: number, offset: number, len: number, done: boolean): Promise<Buffer> {
    const pool = this.#hooks.pool;
    const out = pool.get(CHUNK_HEADER_SIZE + 8 + len);
    putChunkHeader(out, 0, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE_OFFSET_DATA, cHi, cLo, 8 + len);
    putU64(out, CHUNK_HEADER_SIZE, offset);
    try {
      await this.#ops!.read(out.subarray(CHUNK_HEADER_SIZE + 8), offset);
    } catch (e) {
      pool.put(out);
      throw e;
    }
    return out;
  }

  /** A large structured read: data chunks for stored ranges, hole chunks for zero ranges. */
  async #sparseRead(cHi: number, cLo: number, offset: number, len: number): Promise<void> {
    const segments = planRead(await this.#ops!.extents(offset, len), PREFERRED_BLOCK);
    if (segments.length <= 1 && !segments[0]?.hole) {
      this.#send(await this.#dataChunk(cHi, cLo, offset, len, true), true);
      return;
    }
    // Every chunk is built before any is sent, so an error can still replace the whole reply.
    const settled = await Promise.allSettled(
      segments.map(async (s, i) => {
        const done = i === segments.length - 1;
        if (!s.hole) return this.#dataChunk(cHi, cLo, s.offset, s.length, done);
        const out = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + 12);
        putChunkHeader(out, 0, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE_OFFSET_HOLE, cHi, cLo, 12);
        putU64(out, CHUNK_HEADER_SIZE, s.offset);
        out.writeUInt32BE(s.length, CHUNK_HEADER_SIZE + 8);
        return out;
      }),
    );
    const failed = settled.find((r) => r.status === 'rejected');
    for (const [i, r] of settled.entries()) {
      if (r.status !== 'fulfilled') continue;
      if (failed) {
        if (!segments[i]!.hole) this.#hooks.pool.put(r.value);
      } else this.#send(r.value, !segments[i]!.hole);
    }
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  #startWrite(flags: number, cHi: number, cLo: number, offset: number, data: Buffer): void {
    if (this.#shutdown) return this.#replyError(cHi, cLo, NBD_ESHUTDOWN, 'server is shutting down');
    if ((flags & ~ALLOWED_FLAGS[CMD_WRITE]!) !== 0) {
      return this.#replyError(cHi, cLo, NBD_EINVAL, `flags 0x${flags.toString(16)} are not valid for WRITE`);
    }
    if (this.#refused('write', cHi, cLo, offset, data.length)) return;
    void this.#run(CMD_WRITE, cHi, cLo, offset, data.length, data.length, () => this.#ops!.write(data, offset, (flags & CMD_FLAG_FUA) !== 0 ? FUA : NO_FUA));
  }

  /** Sends the status reply itself (true: no plain OK). */
  async #blockStatus(flags: number, cHi: number, cLo: number, offset: number, len: number): Promise<true> {
    const extents = await this.#ops!.extents(offset, Math.min(len, STATUS_MAX));
    this.#send(
      statusReply(extents, {
        cookieHi: cHi,
        cookieLo: cLo,
        base: this.#ctxBase,
        depth: this.#ctxDepth,
        layerCount: this.#dev!.layerCount,
        reqOne: (flags & CMD_FLAG_REQ_ONE) !== 0,
        maxDescriptors: this.#limits.maxDescriptors,
      }),
    );
    return true;
  }

  // ---- ending ----

  /** Nothing is running any more: flush a writable export, then close. */
  async #finish(): Promise<void> {
    if (this.#phase !== TRANSMISSION) return;
    this.#phase = CLOSING;
    if (!this.#exp!.readOnly) {
      try {
        await this.#ops!.flush();
      } catch (e) {
        this.#hooks.emit({ type: 'io-error', connection: this.id, export: this.#exp!.name, command: 'FLUSH', offset: 0, length: 0, error: e });
      }
    }
    this.#close(this.#shutdown ? 'server shutting down' : 'client disconnected');
  }

  #protocolError(message: string): void {
    this.#hooks.emit({ type: 'protocol-error', connection: this.id, message });
    this.#close(message);
  }

  #abort(reason: string): void {
    if (this.#phase === HANDSHAKE) this.#hooks.emit({ type: 'protocol-error', connection: this.id, message: reason });
    this.#destroy(reason);
  }

  /** Half-closes after the queued replies are written; destroys if the peer lingers. */
  #close(reason: string): void {
    if (this.#phase === CLOSED) return;
    this.#reason = reason;
    this.#phase = CLOSING;
    this.#socket.end();
    const t = setTimeout(() => this.#socket.destroy(), 2000);
    t.unref();
    this.#socket.once('close', () => clearTimeout(t));
  }

  #destroy(reason: string): void {
    if (this.#phase === CLOSED) return;
    this.#reason = reason;
    this.#phase = CLOSING;
    this.#socket.destroy();
  }
}
