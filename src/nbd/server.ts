/**
 * An NBD server: named exports of block devices, served on a unix socket or TCP to any
 * number of connections. The server does not own the devices: it flushes writable ones on
 * close, and the caller closes them afterwards.
 */
import { lstat, stat, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { NbdConnection, type ConnectionLimits, type NbdEvent } from './connection.ts';
import { NbdServerError } from './errors.ts';
import type { BlockDevice } from '../io/types.ts';
import { ExportTable, type NbdExportOptions, type NbdExportTable, type ResolvedExport } from './exports.ts';
import { BufferPool } from './pool.ts';
import { MAX_PAYLOAD_DEFAULT, nbdUri } from './protocol.ts';

export type NbdAddress = { socket: string } | { host: string; port: number };

export interface NbdServerOptions {
  exports: NbdExportTable;
  /** The export an empty name selects when there are several (default: the only one). */
  defaultExport?: string;
  /** Requests running at once per connection before it stops reading (default 64). */
  maxInFlight?: number;
  /** Payload bytes running at once per connection before it stops reading (default 64 MiB). */
  maxInFlightBytes?: number;
  /** Reply bytes queued per connection before it stops reading (default 8 MiB). */
  maxBufferedBytes?: number;
  /** Largest READ/WRITE length, advertised as the maximum block size (default 32 MiB). */
  maxPayload?: number;
  /** Time allowed for the handshake, in ms (default 30 s; 0 = unlimited). */
  handshakeTimeoutMs?: number;
  /** Connection events: connects, chosen exports, protocol violations, device errors. */
  onEvent?: (e: NbdEvent) => void;
}

export interface NbdExportInfo {
  name: string;
  size: number;
  readOnly: boolean;
  layers: number;
  description: string;
}

export class NbdServer {
  readonly #exports: ExportTable;
  readonly #limits: ConnectionLimits;
  readonly #onEvent: (e: NbdEvent) => void;
  readonly #connections = new Set<NbdConnection>();
  /** Large reply buffers reused across connections (at most 64 MiB kept). */
  readonly #pool = new BufferPool(64 * 1024 * 1024);
  #server: net.Server | undefined;
  #address: NbdAddress | undefined;
  #closing: Promise<void> | undefined;
  #nextId = 1;

  constructor(opts: NbdServerOptions) {
    this.#exports = new ExportTable(opts.exports, opts.defaultExport);
    const maxPayload = opts.maxPayload ?? MAX_PAYLOAD_DEFAULT;
    if (!Number.isInteger(maxPayload) || maxPayload < 4096 || maxPayload % 512 !== 0 || maxPayload > 2 ** 31) {
      throw new NbdServerError(`maxPayload ${maxPayload} must be a multiple of 512 between 4096 and 2 GiB`);
    }
    this.#limits = {
      maxInFlight: Math.max(1, opts.maxInFlight ?? 64),
      maxInFlightBytes: Math.max(1, opts.maxInFlightBytes ?? 64 * 1024 * 1024),
      maxBufferedBytes: Math.max(1, opts.maxBufferedBytes ?? 8 * 1024 * 1024),
      maxPayload,
      maxOptionLength: 64 * 1024,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 30_000,
      maxDescriptors: 65536,
    };
    this.#onEvent = opts.onEvent ?? (() => {});
  }

  /** The exports offered, in order. */
  get exports(): NbdExportInfo[] {
    return this.#exports.list().map((e: ResolvedExport) => ({
      name: e.name,
      size: e.size,
      readOnly: e.readOnly,
      layers: e.device.layerCount,
      description: e.description,
    }));
  }

  /** Where the server listens (with the real port when TCP port 0 was asked). */
  get address(): NbdAddress | undefined {
    return this.#address;
  }

  /** Open client connections. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** The NBD URI of an export, e.g. `nbd+unix:///name?socket=/run/obd.sock`. */
  uri(exportName = ''): string {
    if (!this.#address) throw new NbdServerError('the server is not listening');
    return nbdUri(this.#address, exportName);
  }

  /**
   * Starts listening. A stale unix socket file (nobody accepting on it) is replaced; a live
   * one or any other kind of file is an error.
   */
  async listen(addr: NbdAddress): Promise<NbdAddress> {
    if (this.#server) throw new NbdServerError('the server is already listening');
    if (this.#closing) throw new NbdServerError('the server is closed');
    if ('socket' in addr) {
      // Binding in a missing directory fails with EACCES, which points the user the wrong way.
      const dir = path.dirname(path.resolve(addr.socket));
      if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) throw new NbdServerError(`cannot listen on ${addr.socket}: no such directory ${dir}`);
      await removeStaleSocket(addr.socket);
    }
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.#accept(s));
    await new Promise<void>((resolve, reject) => {
      const fail = (e: NodeJS.ErrnoException) => {
        const where = 'socket' in addr ? addr.socket : `${addr.host}:${addr.port}`;
        reject(new NbdServerError(`cannot listen on ${where}: ${e.code === 'EADDRINUSE' ? 'address in use' : e.message}`, { cause: e }));
      };
      server.once('error', fail);
      const done = () => {
        server.off('error', fail);
        resolve();
      };
      if ('socket' in addr) server.listen(addr.socket, done);
      else server.listen(addr.port, addr.host, done);
    });
    // Errors after listening (e.g. EMFILE on accept) must not crash the process.
    server.on('error', () => {});
    this.#server = server;
    if ('socket' in addr) this.#address = { socket: addr.socket };
    else {
      const a = server.address() as net.AddressInfo;
      this.#address = { host: addr.host, port: a.port };
    }
    return this.#address;
  }

  #accept(socket: net.Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    socket.on('error', () => {});
    const conn = new NbdConnection(socket, this.#nextId++, this.#exports, this.#limits, {
      emit: (e) => {
        try {
          this.#onEvent(e);
        } catch {
          // A failing event listener must not take a connection down.
        }
      },
      shuttingDown: () => this.#closing !== undefined,
      pool: this.#pool,
    });
    this.#connections.add(conn);
    void conn.closed.then(() => this.#connections.delete(conn));
    conn.start();
  }

  /** Offers one more export from now on (attach while serving). */
  addExport(name: string, value: BlockDevice | NbdExportOptions): void {
    if (this.#closing) throw new NbdServerError('the server is closed');
    this.#exports.add(name, value);
  }

  /**
   * Stops offering `name` (detach while serving): new clients no longer find it; its
   * clients' running requests finish, later ones get ESHUTDOWN, a writable export is
   * flushed, and those clients are disconnected (cut after `timeoutMs`). Resolves once they
   * are gone; the device stays open, for its owner to close. Rejects if the flush fails.
   */
  async removeExport(name: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    const exp = this.#exports.remove(name);
    if (!exp) throw new NbdServerError(`no export "${name}"`);
    const conns = [...this.#connections].filter((c) => c.exportName === name);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, opts.timeoutMs ?? 10_000);
    });
    await Promise.race([Promise.all(conns.map((c) => c.shutdown())), timeout]);
    clearTimeout(timer);
    for (const c of conns) if (this.#connections.has(c)) c.destroy('export removed, timed out');
    await Promise.all(conns.map((c) => c.closed));
    await exp.ops.flush();
  }

  /**
   * Stops accepting, lets running requests finish (new ones get ESHUTDOWN), closes every
   * connection, flushes writable exports and removes the unix socket. Connections still
   * open after `timeoutMs` are cut. Rejects if a flush fails.
   */
  close(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.#closing ??= this.#close(opts.timeoutMs ?? 10_000);
    return this.#closing;
  }

  async #close(timeoutMs: number): Promise<void> {
    const server = this.#server;
    const stopped = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    const conns = [...this.#connections];
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.all(conns.map((c) => c.shutdown())), timeout]);
    clearTimeout(timer);
    for (const c of this.#connections) c.destroy('server shutdown timed out');
    await Promise.all(conns.map((c) => c.closed));
    await stopped;
    const errors: unknown[] = [];
    for (const exp of this.#exports.list()) {
      try {
        await exp.ops.flush();
      } catch (e) {
        errors.push(e);
      }
    }
    if (this.#address && 'socket' in this.#address) await unlink(this.#address.socket).catch(() => {});
    if (errors.length > 0) throw errors[0];
  }
}

async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new NbdServerError(`${path}: exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new NbdServerError(`${path}: another server is listening on this socket`);
  await unlink(path);
}
