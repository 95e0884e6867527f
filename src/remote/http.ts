/**
 * One HTTP attempt over node:http(s) with keep-alive agents (cheaper per request than
 * fetch on the hot Range path: docs/benchmarking.md §6). No retries, redirects or auth here:
 * the registry client layers those on. Every socket has an idle timeout, so nothing hangs.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { NetworkError, ProtocolError, TimeoutError } from './errors.ts';

export interface TransportOptions {
  /** `http://host:port` proxy for every request (P2P agents plug in here). */
  proxy?: string;
  /** Accept any TLS certificate (self-signed registries). */
  insecure?: boolean;
  /** Abort when no bytes move for this long (default 30 s). */
  idleTimeoutMs?: number;
  /** Sockets per host (default 16). */
  maxSockets?: number;
  userAgent?: string;
}

/** A request body that can be produced again for a retry. */
export interface BodySource {
  readonly length: number;
  open(): AsyncIterable<Uint8Array>;
}

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: Uint8Array | BodySource;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly url: URL;
  readonly stream: IncomingMessage;
  /** Why the transport aborted the exchange (an idle timeout), if it did. */
  readonly abortReason: Error | undefined;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

export class Transport {
  readonly idleTimeoutMs: number;
  readonly userAgent: string;
  #http: http.Agent;
  #https: https.Agent;

  constructor(opts: TransportOptions = {}) {
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.userAgent = opts.userAgent ?? 'overlaybd-ts/0.1';
    const proxyEnv = opts.proxy ? { HTTP_PROXY: opts.proxy, HTTPS_PROXY: opts.proxy, NO_PROXY: '' } : undefined;
    const common = { keepAlive: true, maxSockets: opts.maxSockets ?? 16, scheduling: 'lifo' as const, ...(proxyEnv ? { proxyEnv } : {}) };
    this.#http = new http.Agent(common);
    this.#https = new https.Agent({ ...common, rejectUnauthorized: !opts.insecure });
  }

  /** Sends one request; resolves when the response headers arrived. The caller consumes the body. */
  request(req: HttpRequest): Promise<HttpResponse> {
    const { url } = req;
    const mod = url.protocol === 'https:' ? https : http;
    const agent = url.protocol === 'https:' ? this.#https : this.#http;
    const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
    const body = req.body;
    if (body !== undefined) headers['content-length'] = String(body instanceof Uint8Array ? body.length : body.length);
    const where = `${req.method} ${redact(url)}`;
    return new Promise((resolve, reject) => {
      let failure: Error | undefined;
      const r = mod.request(url, { method: req.method, headers, agent }, (res) => {
        res.on('error', () => {});
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          url,
          stream: res,
          get abortReason() {
            return failure;
          },
        });
      });
      r.setTimeout(this.idleTimeoutMs, () => {
        failure = new TimeoutError(where, `no data for ${this.idleTimeoutMs} ms`);
        r.destroy(failure);
      });
      r.on('error', (e) => reject(failure ?? new NetworkError(where, e.message, undefined, { cause: e })));
      if (body === undefined) r.end();
      else if (body instanceof Uint8Array) r.end(body);
      else {
        const s = Readable.from(body.open(), { objectMode: false });
        s.on('error', (e) => r.destroy(e));
        s.pipe(r);
      }
    });
  }

  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }
}

/** A URL for messages: query strings (upload state, signed URLs) left out. */
export function redact(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/** Reads a whole (small) body; refuses more than `limit` bytes. */
export async function readBody(res: HttpResponse, limit = 8 << 20): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of res.stream as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > limit) {
        res.stream.destroy();
        throw new ProtocolError(redact(res.url), `response larger than ${limit} bytes`, res.status);
      }
      chunks.push(c);
    }
  } catch (e) {
    throw mapBodyError(res, e);
  }
  return Buffer.concat(chunks, n);
}

/** Reads exactly `buf.length` body bytes into `buf` (no copies beyond the socket chunks). */
export async function readBodyInto(res: HttpResponse, buf: Uint8Array): Promise<void> {
  let n = 0;
  try {
    for await (const c of res.stream as AsyncIterable<Buffer>) {
      if (n + c.length > buf.length) {
        res.stream.destroy();
        throw new ProtocolError(redact(res.url), `body longer than the ${buf.length} bytes announced`, res.status);
      }
      buf.set(c, n);
      n += c.length;
    }
  } catch (e) {
    throw mapBodyError(res, e);
  }
  if (n !== buf.length) throw new NetworkError(redact(res.url), `body ended after ${n} of ${buf.length} bytes`, res.status);
}

/** Drops a body we do not need while keeping the socket reusable when it is small. */
export function discard(res: HttpResponse): void {
  const len = Number(res.headers['content-length'] ?? NaN);
  if (Number.isFinite(len) && len <= 65536) res.stream.resume();
  else res.stream.destroy();
}

function mapBodyError(res: HttpResponse, e: unknown): Error {
  if (e instanceof NetworkError || e instanceof TimeoutError || e instanceof ProtocolError) return e;
  if (res.abortReason) return res.abortReason;
  const err = e as Error;
  return new NetworkError(redact(res.url), `body failed: ${err?.message ?? String(e)}`, res.status, { cause: e });
}
