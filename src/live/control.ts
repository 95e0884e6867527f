/**
 * The control API of `obd serve --control` (docs/control-api.md): HTTP/JSON on a unix socket
 * created mode 0600, or on loopback TCP where every request must carry the bearer token.
 * A request can fail (4xx/5xx with a JSON error); it never stops the server: every handler's
 * failure is caught, bodies are bounded, idle and slow connections are cut.
 */
import { timingSafeEqual } from 'node:crypto';
import { chmod, mkdtemp, rename, rm, stat, unlink } from 'node:fs/promises';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { http } from '../io/builtins.ts';
import { ObdError, InvalidArgumentError, NotFoundError, errnoOf } from '../io/errors.ts';
import { removeStaleSocket } from '../io/unix-socket.ts';
import type { LiveDisk, SnapshotOptions } from './disk.ts';

/** A request the API refuses: `status` is its HTTP status. */
class HttpError extends ObdError {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export type ControlAddress = { socket: string } | { host: string; port: number };

export interface ControlServerOptions {
  /** Live disks by export name. */
  disks: Map<string, LiveDisk>;
  /** Every export the NBD server offers (listed, with sizes), live or not. */
  exports: () => { name: string; size: number; readOnly: boolean; layers: number }[];
  /** NBD connections open now. */
  connections?: () => number;
  /** Required on TCP: requests must send `Authorization: Bearer <token>`. */
  token?: string;
  /** Push settings for snapshots (registry options from the serve command line). */
  pushOptions?: SnapshotOptions['pushOptions'];
  /** Opens an image and offers it as a new export (`obd attach`). */
  attach?: (name: string, image: string[], opts: { writable?: boolean; upper?: { data: string; index: string } }) => Promise<void>;
  /** Stops offering an export: its clients are disconnected, a writable one flushed (`obd detach`). */
  detach?: (name: string) => Promise<void>;
  /** Prometheus text for GET /metrics. */
  metrics?: () => string;
  /** Told of each request that failed (the server goes on). */
  onError?: (e: { method: string; path: string; status: number; message: string }) => void;
}

/** Largest request body read (bytes). */
const MAX_BODY = 64 * 1024;
const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/;

/** HTTP status for a failure: client mistakes are 4xx, the disk's failures 5xx. */
function statusOf(e: unknown): number {
  if (e instanceof HttpError) return e.status;
  switch (errnoOf(e)) {
    case 'EINVAL':
      return 400;
    case 'EPERM':
      return 403;
    case 'ENOENT':
      return 404;
    case 'EBUSY':
      return 409;
    case 'ENOTSUP':
      return 501;
    case 'ENOSPC':
      return 507;
    default:
      return 500;
  }
}

export class ControlServer {
  readonly #opts: ControlServerOptions;
  readonly #server: Server;
  #address: ControlAddress | undefined;
  #closing: Promise<void> | undefined;

  constructor(opts: ControlServerOptions) {
    this.#opts = opts;
    this.#server = http().createServer({ requestTimeout: 0, headersTimeout: 10_000, maxHeaderSize: 16 * 1024 }, (req, res) => {
      this.#handle(req, res).catch(() => res.destroy());
    });
    // Slow-loris and idle sockets: no request may dribble headers for long; keep-alives end.
    this.#server.keepAliveTimeout = 5_000;
    this.#server.maxConnections = 64;
    this.#server.on('clientError', (_e, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"error":{"code":"EINVAL","message":"malformed HTTP request"}}');
      else socket.destroy();
    });
    this.#server.on('error', () => {});
  }

  get address(): ControlAddress | undefined {
    return this.#address;
  }

  /** Listens on a unix socket (mode 0600; a stale socket is replaced) or loopback TCP (token required). */
  async listen(addr: ControlAddress): Promise<ControlAddress> {
    if ('socket' in addr) {
      const dir = path.dirname(path.resolve(addr.socket));
      if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) throw new InvalidArgumentError(`cannot listen on ${addr.socket}: no such directory ${dir}`);
      await removeStaleSocket(addr.socket, (m) => new InvalidArgumentError(m));
      // Bound inside a fresh 0700 directory, made 0600, then renamed into place: nobody but the
      // owner can connect at any moment (the umask cannot be set in worker threads).
      const tmp = await mkdtemp(path.join(dir, '.obd-control-'));
      try {
        const inner = path.join(tmp, 's');
        await this.#bind(() => this.#server.listen(inner));
        await chmod(inner, 0o600);
        await rename(inner, addr.socket);
      } catch (e) {
        this.#server.close();
        throw e;
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
      this.#address = { socket: addr.socket };
    } else {
      if (!LOOPBACK.test(addr.host)) throw new InvalidArgumentError(`the control API listens on loopback only (127.0.0.1 or ::1), not ${addr.host}`);
      if (!this.#opts.token) throw new InvalidArgumentError('the control API on TCP needs a bearer token (--control-token FILE)');
      await this.#bind(() => this.#server.listen(addr.port, addr.host));
      this.#address = { host: addr.host, port: (this.#server.address() as net.AddressInfo).port };
    }
    return this.#address;
  }

  #bind(start: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const fail = (e: Error) => reject(new InvalidArgumentError(`control API: cannot listen: ${e.message}`, { cause: e }));
      this.#server.once('error', fail);
      this.#server.once('listening', () => {
        this.#server.off('error', fail);
        resolve();
      });
      start();
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://control');
    try {
      this.#authorize(req);
      if (url.pathname === '/metrics' && this.#opts.metrics) {
        if (method !== 'GET') throw new HttpError(405, `/metrics takes GET, not ${method}`);
        req.resume();
        const text = this.#opts.metrics();
        res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
        res.end(text);
        return;
      }
      const body = method === 'POST' ? await readJson(req) : (req.resume(), {});
      const result = await this.#route(method, url, body);
      send(res, 200, result);
    } catch (e) {
      const status = statusOf(e);
      const message = e instanceof Error ? e.message : String(e);
      this.#opts.onError?.({ method, path: url.pathname, status, message });
      send(res, status, { error: { code: e instanceof HttpError ? httpCode(status) : errnoOf(e), type: e instanceof Error ? e.name : 'Error', message } });
    }
  }

  #authorize(req: IncomingMessage): void {
    const token = this.#opts.token;
    if (!token || (this.#address && 'socket' in this.#address)) return;
    const got = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
    const a = Buffer.from(got);
    const b = Buffer.from(token);
    if (a.length !== b.length || !timingSafeEqual(a, b)) throw new HttpError(401, 'missing or wrong bearer token');
  }

  #disk(body: Record<string, unknown>): { name: string; disk: LiveDisk } {
    const name = body.export ?? (this.#opts.disks.size === 1 ? [...this.#opts.disks.keys()][0] : '');
    if (typeof name !== 'string') throw new HttpError(400, '"export" must be a string');
    const disk = this.#opts.disks.get(name);
    if (!disk) {
      const live = [...this.#opts.disks.keys()].map((n) => JSON.stringify(n)).join(', ') || 'none';
      throw new NotFoundError(`no live export named ${JSON.stringify(name)} (live exports: ${live}); only a writable export served with --control takes snapshots`);
    }
    return { name, disk };
  }

  async #route(method: string, url: URL, body: Record<string, unknown>): Promise<unknown> {
    const route = url.pathname.replace(/\/+$/, '') || '/';
    const want = (m: string) => {
      if (method !== m) throw new HttpError(405, `${route} takes ${m}, not ${method}`);
    };
    switch (route) {
      case '/v1/exports': {
        want('GET');
        return {
          exports: this.#opts.exports().map((e) => {
            const d = this.#opts.disks.get(e.name);
            return { ...e, live: Boolean(d), ...(d ? { stack: d.describe() } : {}) };
          }),
        };
      }
      case '/v1/stats': {
        want('GET');
        const disks: Record<string, unknown> = {};
        for (const [n, d] of this.#opts.disks) disks[n] = d.stats();
        return { pid: process.pid, uptimeSeconds: Math.round(process.uptime()), connections: this.#opts.connections?.() ?? 0, memory: process.memoryUsage().rss, exports: disks };
      }
      case '/v1/snapshot': {
        want('POST');
        checkKeys(body, ['export', 'commit', 'compress', 'push', 'tag', 'rate']);
        const { name, disk } = this.#disk(body);
        const opts: SnapshotOptions = { pushOptions: this.#opts.pushOptions };
        if (body.commit !== undefined) opts.commit = str(body, 'commit');
        if (body.push !== undefined) opts.push = str(body, 'push');
        if (body.tag !== undefined) opts.tag = str(body, 'tag');
        if (body.rate !== undefined) {
          if (typeof body.rate !== 'number' || !Number.isFinite(body.rate) || body.rate < 0) throw new HttpError(400, `"rate" must be bytes per second >= 0 (0: unlimited), not ${JSON.stringify(body.rate)}`);
          opts.rate = body.rate;
        }
        if (body.compress !== undefined) {
          const c = str(body, 'compress');
          if (c !== 'lz4' && c !== 'zstd') throw new HttpError(400, `"compress" must be "lz4" or "zstd", not ${JSON.stringify(c)}`);
          opts.compress = c;
        }
        return { export: name, ...(await disk.snapshot(opts)) };
      }
      case '/v1/compact': {
        want('POST');
        checkKeys(body, ['export']);
        const { name, disk } = this.#disk(body);
        return { export: name, ...(await disk.compact()) };
      }
      case '/v1/resize': {
        want('POST');
        checkKeys(body, ['export', 'size', 'shrink']);
        const { name, disk } = this.#disk(body);
        const size = body.size;
        if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) throw new HttpError(400, '"size" must be a positive whole number of bytes');
        if (body.shrink !== undefined && typeof body.shrink !== 'boolean') throw new HttpError(400, '"shrink" must be true or false');
        return { export: name, ...(await disk.resize(size, { shrink: body.shrink === true })) };
      }
      case '/v1/attach': {
        want('POST');
        checkKeys(body, ['export', 'image', 'writable', 'upper']);
        if (!this.#opts.attach) throw new HttpError(501, 'this server cannot attach exports');
        const name = body.export;
        if (typeof name !== 'string' || name.includes('\0')) throw new HttpError(400, '"export" must be a string (the new export\'s name)');
        const image = typeof body.image === 'string' ? [body.image] : body.image;
        if (!Array.isArray(image) || image.length === 0 || !image.every((a) => typeof a === 'string' && a !== '' && !a.includes('\0'))) {
          throw new HttpError(400, '"image" must be a non-empty string or list of strings (layer files, a config.v1.json, oci:DIR or a reference)');
        }
        if (body.writable !== undefined && typeof body.writable !== 'boolean') throw new HttpError(400, '"writable" must be true or false');
        let upper: { data: string; index: string } | undefined;
        if (body.upper !== undefined) {
          const u = body.upper as Record<string, unknown> | null;
          if (typeof u !== 'object' || u === null || typeof u.data !== 'string' || typeof u.index !== 'string' || !u.data || !u.index) throw new HttpError(400, '"upper" must be {"data": FILE, "index": FILE}');
          upper = { data: u.data, index: u.index };
        }
        await this.#opts.attach(name, image as string[], { writable: body.writable === true, upper });
        return { export: name, attached: true, exports: this.#opts.exports().filter((e) => e.name === name) };
      }
      case '/v1/detach': {
        want('POST');
        checkKeys(body, ['export']);
        if (!this.#opts.detach) throw new HttpError(501, 'this server cannot detach exports');
        const name = body.export;
        if (typeof name !== 'string') throw new HttpError(400, '"export" must be a string');
        if (this.#opts.disks.has(name)) throw new HttpError(409, `export ${JSON.stringify(name)} is a live disk; stop the server to take it away`);
        await this.#opts.detach(name);
        return { export: name, detached: true };
      }
      default:
        throw new HttpError(404, `no such endpoint: ${route} (see docs/control-api.md)`);
    }
  }

  /** Stops listening, ends idle connections, waits for running requests, removes the socket. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const done = new Promise<void>((r) => this.#server.close(() => r()));
      this.#server.closeIdleConnections();
      const timer = setTimeout(() => this.#server.closeAllConnections(), 5_000);
      await done;
      clearTimeout(timer);
      if (this.#address && 'socket' in this.#address) await unlink(this.#address.socket).catch(() => {});
    })();
    return this.#closing;
  }
}

function httpCode(status: number): string {
  return ({ 400: 'EINVAL', 401: 'EACCES', 404: 'ENOENT', 405: 'EINVAL', 413: 'EFBIG', 415: 'EINVAL' } as Record<number, string>)[status] ?? 'EIO';
}

function send(res: ServerResponse, status: number, value: unknown): void {
  if (res.headersSent || res.destroyed) return;
  const body = JSON.stringify(value) + '\n';
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(body);
}

function str(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== 'string' || v === '' || v.includes('\0')) throw new HttpError(400, `"${key}" must be a non-empty string`);
  return v;
}

function checkKeys(body: Record<string, unknown>, allowed: string[]): void {
  for (const k of Object.keys(body)) if (!allowed.includes(k)) throw new HttpError(400, `unknown field "${k}" (this endpoint takes ${allowed.map((a) => `"${a}"`).join(', ')})`);
}

/** Reads a JSON object body of at most MAX_BODY bytes (an empty body is `{}`). */
async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'];
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY) {
    req.resume();
    throw new HttpError(413, `request body of ${declared} bytes is over the limit of ${MAX_BODY}`);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_BODY) throw new HttpError(413, `request body is over the limit of ${MAX_BODY} bytes`);
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  if (type !== undefined && !/^application\/json\b/i.test(type)) throw new HttpError(415, `request body must be application/json, not ${type}`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `request body is not JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new HttpError(400, 'request body must be a JSON object');
  return doc as Record<string, unknown>;
}

