/**
 * An NBD server: named exports of block devices, served on a unix socket or TCP to any
 * number of connections. The server does not own the devices: it flushes writable ones on
 * close, and the caller closes them afterwards.
 */
import { readFile, readlink, stat, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { NbdConnection, type ConnectionLimits, type NbdEvent } from './connection.ts';
import { NbdServerError } from './errors.ts';
import type { BlockDevice } from '../io/types.ts';
import { removeStaleSocket } from '../io/unix-socket.ts';
import { ExportTable, type NbdExportOptions, type NbdExportTable, type ResolvedExport } from './exports.ts';
import { BufferPool } from './pool.ts';
import { MAX_PAYLOAD_DEFAULT, nbdUri } from './protocol.ts';
import { NbdTls, type NbdTlsOptions } from './tls.ts';

/** Connections over the limit kept open at once to be told why (the rest are closed at once). */
const MAX_REFUSED = 64;

export type NbdAddress = { socket: string } | { host: string; port: number };
/** A listening socket handed over by a service manager (systemd socket activation), by descriptor. */
export type NbdListenFd = { fd: number };

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
  /** Largest READ/WRITE length, advertised as the maximum block size (default 64 MiB); longer requests get EINVAL. */
  maxPayload?: number;
  /** Time allowed for the handshake, in ms (default 30 s; 0 = unlimited). */
  handshakeTimeoutMs?: number;
  /**
   * Clients served at once; one more gets the greeting and then NBD_REP_ERR_POLICY, with a
   * message naming the limit, for every option until it gives up (default: no limit).
   */
  maxConnections?: number;
  /** STARTTLS with these credentials (`on`: when the client asks; `require`: nothing without it). */
  tls?: NbdTlsOptions;
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
  readonly #tls: NbdTls | undefined;
  readonly #connections = new Set<NbdConnection>();
  /** Connections over the limit, answered with refusals until they leave. */
  readonly #refused = new Set<NbdConnection>();
  readonly #maxConnections: number;
  /** Large reply buffers reused across connections (at most 64 MiB kept). */
  readonly #pool = new BufferPool(64 * 1024 * 1024);
  #server: net.Server | undefined;
  #address: NbdAddress | undefined;
  /** False for a socket the service manager made: its file is not ours to remove. */
  #ownsSocketFile = false;
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
    const max = opts.maxConnections ?? Infinity;
    if (!(max === Infinity || (Number.isSafeInteger(max) && max >= 1))) throw new NbdServerError(`maxConnections ${max} must be a whole number >= 1`);
    this.#maxConnections = max;
    this.#tls = opts.tls ? new NbdTls(opts.tls) : undefined;
  }

  /** TLS mode clients meet. */
  get tlsMode(): 'off' | 'on' | 'require' {
    return this.#tls?.mode ?? 'off';
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

  /** The NBD URI of an export, e.g. `nbd+unix:///name?socket=/run/obd.sock` (`nbds+unix://…` with TLS). */
  uri(exportName = ''): string {
    if (!this.#address) throw new NbdServerError('the server is not listening');
    return nbdUri(this.#address, exportName, this.#tls !== undefined);
  }

  /**
   * Starts listening. A stale unix socket file (nobody accepting on it) is replaced; a live
   * one or any other kind of file is an error. `{ fd }` accepts on a listening socket the
   * process inherited; its file (if unix) is left in place at close.
   */
  async listen(addr: NbdAddress | NbdListenFd): Promise<NbdAddress> {
    if (this.#server) throw new NbdServerError('the server is already listening');
    if (this.#closing) throw new NbdServerError('the server is closed');
    if ('socket' in addr) {
      // Binding in a missing directory fails with EACCES, which points the user the wrong way.
      const dir = path.dirname(path.resolve(addr.socket));
      if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) throw new NbdServerError(`cannot listen on ${addr.socket}: no such directory ${dir}`);
      await removeStaleSocket(addr.socket, (m) => new NbdServerError(m));
    }
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.#accept(s));
    await new Promise<void>((resolve, reject) => {
      const fail = (e: NodeJS.ErrnoException) => {
        const where = 'socket' in addr ? addr.socket : 'fd' in addr ? `inherited descriptor ${addr.fd}` : `${addr.host}:${addr.port}`;
        reject(new NbdServerError(`cannot listen on ${where}: ${e.code === 'EADDRINUSE' ? 'address in use' : e.message}`, { cause: e }));
      };
      server.once('error', fail);
      const done = () => {
        server.off('error', fail);
        resolve();
      };
      if ('socket' in addr) server.listen(addr.socket, done);
      else if ('fd' in addr) server.listen({ fd: addr.fd }, done);
      else server.listen(addr.port, addr.host, done);
    });
    // Errors after listening (e.g. EMFILE on accept) must not crash the process.
    server.on('error', () => {});
    this.#server = server;
    this.#ownsSocketFile = 'socket' in addr;
    if ('socket' in addr) this.#address = { socket: addr.socket };
    else if ('fd' in addr) {
      const a = server.address();
      this.#address = a && typeof a === 'object' ? { host: a.address, port: a.port } : { socket: await unixPathOfFd(addr.fd) };
    } else {
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
    const over = this.#connections.size >= this.#maxConnections;
    // Refusals are answered, but not without bound: past that, a connection is just closed.
    if (over && this.#refused.size >= MAX_REFUSED) {
      socket.destroy();
      return;
    }
    const conn = new NbdConnection(socket, this.#nextId++, this.#exports, this.#limits, {
      ...(over ? { refusal: `server is at its limit of ${this.#maxConnections} connection${this.#maxConnections === 1 ? '' : 's'}; try again later` } : {}),
      emit: (e) => {
        try {
          this.#onEvent(e);
        } catch {
          // A failing event listener must not take a connection down.
        }
      },
      shuttingDown: () => this.#closing !== undefined,
      pool: this.#pool,
      tls: this.#tls,
    });
    const set = over ? this.#refused : this.#connections;
    set.add(conn);
    void conn.closed.then(() => set.delete(conn));
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
    const conns = [...this.#connections, ...this.#refused];
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.all(conns.map((c) => c.shutdown())), timeout]);
    clearTimeout(timer);
    for (const c of [...this.#connections, ...this.#refused]) c.destroy('server shutdown timed out');
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
    if (this.#ownsSocketFile && this.#address && 'socket' in this.#address) await unlink(this.#address.socket).catch(() => {});
    if (errors.length > 0) throw errors[0];
  }
}

/**
 * The path of an inherited unix listening socket, for messages and URIs: node:net does not
 * report one, so it is looked up by inode in /proc/net/unix (Linux). An abstract or unnamed
 * socket has none; then the descriptor is named instead.
 */
async function unixPathOfFd(fd: number): Promise<string> {
  try {
    const inode = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/self/fd/${fd}`))?.[1];
    for (const line of (await readFile('/proc/net/unix', 'utf8')).split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (inode !== undefined && f[6] === inode && f[7] && f[7].startsWith('/')) return f[7];
    }
  } catch {
    // Not Linux, or /proc not mounted: fall through.
  }
  return `/proc/self/fd/${fd}`;
}
