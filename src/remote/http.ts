/**
 * One HTTP attempt over node:http(s) with keep-alive agents (cheaper per request than
 * fetch on the hot Range path: docs/benchmarking.md §6). No retries, redirects or auth here:
 * the registry client layers those on. Nothing a server does can hang a request or grow
 * memory without bound: connecting, waiting for headers, silence and a trickling body each
 * have a limit, and bodies are read against a byte cap or the exact length asked
 * (docs/format.md §6).
 */
import type { Agent as HttpAgent, IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { http, https } from '../io/builtins.ts';
import { InvalidArgumentError } from '../io/errors.ts';
import { isRetryable, NetworkError, ProtocolError, RemoteError, TimeoutError } from './errors.ts';
import { makeAgent, ProxyRoutes, type AgentOptions } from './proxy.ts';
import { DEFAULT_IDLE_TIMEOUT_MS } from './defaults.ts';


export interface TransportOptions {
  /**
   * Proxy for every request (P2P agents plug in here): `http://`, `https://`, `socks5://` or
   * `socks5h://`, with `USER:PASSWORD@` if the proxy wants them. Without it, the environment's
   * HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY apply (src/remote/proxy.ts).
   */
  proxy?: string;
  /** Accept any TLS certificate (self-signed registries). */
  insecure?: boolean;
  /**
   * Abort when no bytes move for this long (default 30 s). A body is checked once per period,
   * so its silence is caught within two.
   */
  idleTimeoutMs?: number;
  /** Abort when the connection is not up after this long (default 10 s, at most the header wait). */
  connectTimeoutMs?: number;
  /** Abort when the response headers are not in this long after sending (default: the idle timeout). */
  headerTimeoutMs?: number;
  /**
   * Abort a body slower than this many bytes per second, measured over each idle-timeout
   * window, so a server trickling a byte now and then cannot hold a request forever
   * (default 1024; 0 turns the check off). Time the reader spends not reading is not counted.
   */
  minBytesPerSec?: number;
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
  /** Why the exchange failed below the body stream (a timeout, a malformed response), if it did. */
  readonly abortReason: Error | undefined;
}

export { DEFAULT_IDLE_TIMEOUT_MS };
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_MIN_BYTES_PER_SEC = 1024;

export class Transport {
  readonly idleTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly headerTimeoutMs: number;
  readonly minBytesPerSec: number;
  readonly userAgent: string;
  readonly #routes: ProxyRoutes;
  readonly #agentOptions: AgentOptions;
  /** Keep-alive agents by target scheme and proxy, made on first use. */
  readonly #agents = new Map<string, HttpAgent>();

  constructor(opts: TransportOptions = {}) {
    this.idleTimeoutMs = positive(opts.idleTimeoutMs, 'idleTimeoutMs') ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.headerTimeoutMs = positive(opts.headerTimeoutMs, 'headerTimeoutMs') ?? this.idleTimeoutMs;
    this.connectTimeoutMs = positive(opts.connectTimeoutMs, 'connectTimeoutMs') ?? Math.min(DEFAULT_CONNECT_TIMEOUT_MS, this.headerTimeoutMs);
    this.minBytesPerSec = opts.minBytesPerSec ?? DEFAULT_MIN_BYTES_PER_SEC;
    if (!(this.minBytesPerSec >= 0)) throw new InvalidArgumentError(`minBytesPerSec ${opts.minBytesPerSec} must be a byte rate >= 0`);
    this.userAgent = opts.userAgent ?? 'overlaybd-ts/0.1';
    this.#routes = new ProxyRoutes(opts.proxy);
    this.#agentOptions = { keepAlive: true, maxSockets: opts.maxSockets ?? 16, scheduling: 'lifo', connectTimeoutMs: this.connectTimeoutMs, rejectUnauthorized: !opts.insecure };
  }

  #agent(url: URL): HttpAgent {
    const protocol = url.protocol === 'https:' ? 'https:' : 'http:';
    const proxy = this.#routes.forUrl(url);
    const key = `${protocol} ${proxy?.href ?? ''}`;
    let a = this.#agents.get(key);
    if (!a) this.#agents.set(key, (a = makeAgent(protocol, proxy, this.#agentOptions)));
    return a;
  }

  /** Sends one request; resolves when the response headers arrived. The caller consumes the body. */
  request(req: HttpRequest): Promise<HttpResponse> {
    const { url } = req;
    const mod = url.protocol === 'https:' ? https() : http();
    const agent = this.#agent(url);
    // Bytes are taken as sent (digests, ranges and lengths are of the raw blob): no content coding.
    const headers: Record<string, string> = { 'user-agent': this.userAgent, 'accept-encoding': 'identity', ...req.headers };
    const body = req.body;
    if (body !== undefined) headers['content-length'] = String(body instanceof Uint8Array ? body.length : body.length);
    const where = `${req.method} ${redact(url)}`;
    return new Promise((resolve, reject) => {
      let failure: Error | undefined;
      const abort = (e: TimeoutError) => {
        failure ??= e;
        r.destroy(failure);
      };
      let headerTimer: NodeJS.Timeout | undefined;
      let response: IncomingMessage | undefined;
      const r = mod.request(url, { method: req.method, headers, agent }, (res) => {
        response = res;
        clearTimeout(headerTimer);
        res.on('error', () => {});
        const coding = res.headers['content-encoding'];
        if (coding !== undefined && coding.toLowerCase() !== 'identity') {
          failure = new ProtocolError(where, `answered with Content-Encoding "${coding.slice(0, 40)}" to a request for identity`, res.statusCode);
          r.destroy(failure);
          reject(failure);
          return;
        }
        this.#watchBody(res, where, abort);
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
      // Counted from the end of the upload: a slow request body is the idle timeout's business.
      r.once('finish', () => {
        if (!failure && !response) headerTimer = setTimeout(() => abort(new TimeoutError(where, `no response headers within ${this.headerTimeoutMs} ms of sending`)), this.headerTimeoutMs);
      });
      r.on('socket', (sock) => {
        if (!sock.connecting) return;
        const t = setTimeout(() => abort(new TimeoutError(where, `not connected within ${this.connectTimeoutMs} ms`)), this.connectTimeoutMs);
        const done = () => clearTimeout(t);
        sock.once('connect', done);
        sock.once('close', done);
      });
      // Until the headers arrive (upload included); the body is #watchBody's, since node:http
      // reports a socket timeout only once and cannot tell a paused reader from a silent server.
      r.setTimeout(this.idleTimeoutMs, () => {
        if (!response) abort(new TimeoutError(where, `no data for ${this.idleTimeoutMs} ms`));
      });
      // Without a listener node:http drops an upgraded socket silently, leaving this promise hanging.
      r.on('upgrade', (res, sock) => {
        sock.destroy();
        failure ??= new ProtocolError(where, `answered ${res.statusCode} ${res.statusMessage ?? ''}: a registry does not switch protocols`, res.statusCode);
        reject(failure);
      });
      r.once('close', () => {
        clearTimeout(headerTimer);
        if (!response) reject(failure ?? new NetworkError(where, 'connection closed before a response'));
      });
      r.on('error', (e) => {
        clearTimeout(headerTimer);
        // Also after the headers: a body the parser refused then reads as this, not as "aborted".
        failure ??= transportError(where, e, response?.statusCode);
        reject(failure);
      });
      if (body === undefined) r.end();
      else if (body instanceof Uint8Array) r.end(body);
      else {
        const s = Readable.from(body.open(), { objectMode: false });
        s.on('error', (e) => r.destroy(e));
        s.pipe(r);
      }
    });
  }

  /**
   * Aborts a body that moves no bytes, or fewer than the minimum rate asks, in a window of
   * `idleTimeoutMs`. Counted on the socket, so it costs nothing per chunk; a window that
   * starts or ends with bytes left unread (back-pressure, a rate-limited download) is the
   * reader's doing and passes.
   */
  #watchBody(res: IncomingMessage, where: string, abort: (e: TimeoutError) => void): void {
    const sock = res.socket;
    const window = this.idleTimeoutMs;
    const need = (this.minBytesPerSec * window) / 1000;
    let seen = sock.bytesRead;
    let wasBehind = false;
    const t = setInterval(() => {
      const now = sock.bytesRead;
      const behind = res.readableLength > 0;
      if (!behind && !wasBehind && !res.complete) {
        if (now === seen) abort(new TimeoutError(where, `no data for ${window} ms`));
        else if (now - seen < need) abort(new TimeoutError(where, `body slower than ${this.minBytesPerSec} bytes/s over ${window} ms`));
      }
      seen = now;
      wasBehind = behind;
    }, window);
    // The socket keeps the process alive while the body can still move; this timer need not.
    t.unref();
    const stop = () => clearInterval(t);
    res.once('end', stop);
    res.once('close', stop);
  }

  close(): void {
    for (const a of this.#agents.values()) a.destroy();
    this.#agents.clear();
  }
}

/** A URL for messages: query strings (upload state, signed URLs) left out. */
export function redact(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/** Reads a whole (small) body; refuses more than `limit` bytes. */
export async function readBody(res: HttpResponse, limit = 8 << 20): Promise<Buffer> {
  const announced = contentLength(res);
  if (announced !== undefined && announced > limit) {
    res.stream.destroy();
    throw new ProtocolError(redact(res.url), `response announces ${announced} bytes, more than the ${limit} allowed`, res.status);
  }
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
  const announced = contentLength(res);
  if (announced !== undefined && announced !== buf.length) {
    res.stream.destroy();
    throw new ProtocolError(redact(res.url), `Content-Length ${announced} is not the ${buf.length} bytes asked`, res.status);
  }
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

/** The Content-Length a response announces, if it announces one. */
export function contentLength(res: HttpResponse): number | undefined {
  const h = res.headers['content-length'];
  return h === undefined ? undefined : Number(h);
}

/** Drops a body we do not need while keeping the socket reusable when it is small. */
export function discard(res: HttpResponse): void {
  const len = contentLength(res);
  if (len !== undefined && len <= 65536) res.stream.resume();
  else res.stream.destroy();
}

function mapBodyError(res: HttpResponse, e: unknown): Error {
  if (e instanceof NetworkError || e instanceof TimeoutError || e instanceof ProtocolError) return e;
  if (res.abortReason) return res.abortReason;
  return transportError(redact(res.url), e, res.status, 'body failed: ');
}

/**
 * A socket-level failure as a typed error: a response the HTTP parser refuses (llhttp's
 * HPE_* codes: bad framing, oversized headers, a bad chunk) is the server breaking the
 * protocol, which another try will not mend; anything else is the network's doing.
 */
function transportError(where: string, e: unknown, status: number | undefined, prefix = ''): Error {
  const err = e as NodeJS.ErrnoException;
  // Already typed below node:http (a SOCKS proxy's refusal or timeout).
  if (e instanceof RemoteError) return e;
  const text = `${prefix}${err?.message ?? String(e)}`;
  if (typeof err?.code === 'string' && err.code.startsWith('HPE_')) return new ProtocolError(where, `malformed HTTP response: ${text}`, status, { cause: e });
  return new NetworkError(where, text, status, { cause: e });
}

function positive(v: number | undefined, name: string): number | undefined {
  if (v !== undefined && !(Number.isFinite(v) && v > 0)) throw new InvalidArgumentError(`${name} ${v} must be a positive number of milliseconds`);
  return v;
}

export interface RetryOptions {
  /** Attempts after the first for retryable failures (default 4). */
  retries?: number;
  /** First backoff in milliseconds, doubled per attempt (default 200). */
  retryBaseMs?: number;
  /** Told of each retry (metrics). */
  onRetry?: () => void;
  /** Once aborted, no further attempt is made: the last failure (or the signal's reason) is thrown. */
  signal?: AbortSignal;
}

const MAX_BACKOFF_MS = 5000;

/** Runs `fn` again on retryable failures (network, timeout, 5xx/429), with exponential backoff and jitter. */
export async function withRetries<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const retries = opts.retries ?? 4;
  const base = opts.retryBaseMs ?? 200;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (!isRetryable(e) || attempt >= retries) throw e;
      opts.onRetry?.();
      await sleep(Math.min(MAX_BACKOFF_MS, base * 2 ** attempt) * (0.5 + Math.random()), undefined, { signal: opts.signal }).catch((s) => {
        throw opts.signal?.aborted ? opts.signal.reason : s;
      });
    }
  }
}

/** The Range header asking for `length` bytes at `offset`. */
export function rangeHeader(offset: number, length: number): string {
  return `bytes=${offset}-${offset + length - 1}`;
}

export function parseContentRange(h: string | string[] | undefined): { start: number; end: number; total: number | undefined } | undefined {
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/.exec(String(h ?? ''));
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

/**
 * Fills `buf` from the response to a Range request for `buf.length` bytes at `offset` of a
 * `total`-byte resource. Only a 206 whose Content-Range is exactly the asked range is taken,
 * or a 200 carrying the whole resource when the whole was asked: a server ignoring Range
 * cannot feed wrong bytes. Returns false (body untouched) for any other status, whose error
 * the caller knows how to name.
 */
export async function takeRange(res: HttpResponse, buf: Uint8Array, offset: number, total: number): Promise<boolean> {
  const end = offset + buf.length - 1;
  const where = redact(res.url);
  if (res.status === 206) {
    const cr = parseContentRange(res.headers['content-range']);
    if (!cr || cr.start !== offset || cr.end !== end || (cr.total !== undefined && cr.total !== total)) {
      discard(res);
      throw new ProtocolError(where, `asked bytes ${offset}-${end}/${total}, got Content-Range "${res.headers['content-range'] ?? ''}"`, 206);
    }
  } else if (res.status === 200) {
    if (offset !== 0 || buf.length !== total || Number(res.headers['content-length']) !== total) {
      res.stream.destroy();
      throw new ProtocolError(where, `server ignored Range bytes=${offset}-${end} (answered 200)`, 200);
    }
  } else {
    return false;
  }
  await readBodyInto(res, buf);
  return true;
}

/** One range of a multi-range request: `buf.length` bytes at `offset`, `done` once filled. */
export interface RangePart {
  readonly buf: Uint8Array;
  readonly offset: number;
  done: boolean;
}

/** The Range header asking for every part, in the order given. */
export function multiRangeHeader(parts: readonly RangePart[]): string {
  return `bytes=${parts.map((p) => `${p.offset}-${p.offset + p.buf.length - 1}`).join(',')}`;
}

/** Header bytes a part may carry before its data; more is not a multipart answer we take. */
const PART_HEADER_LIMIT = 8192;

/**
 * Fills parts from the answer to a multi-range request (RFC 9110 §14.6): a 206 whose
 * multipart/byteranges body has one part per range, each with the exact Content-Range asked,
 * in any order. Bytes go only into the part they are announced for, at its exact length.
 * A single-range 206 that is exactly one asked range fills that one. Returns false — the
 * response dropped, the unfilled parts left to separate requests — for any other answer a
 * server might give to a request it does not take in one piece: a 200 with the whole blob
 * (an object store behind a redirect), a 206 for another range, a part that is not one
 * asked, an answer cut short. Statuses other than 200/206 are the caller's to name, body
 * untouched. Network failures (retryable) throw with the parts filled so far marked done.
 */
export async function takeRanges(res: HttpResponse, parts: readonly RangePart[], total: number): Promise<boolean | undefined> {
  if (res.status === 200) {
    res.stream.destroy();
    return false;
  }
  if (res.status !== 206) return undefined;
  const ctype = String(res.headers['content-type'] ?? '');
  const boundary = /^\s*multipart\/byteranges\s*;(?:.*;)?\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))/i.exec(ctype);
  if (!boundary) {
    const cr = parseContentRange(res.headers['content-range']);
    const part = cr && (cr.total === undefined || cr.total === total) ? parts.find((p) => !p.done && p.offset === cr.start && p.offset + p.buf.length - 1 === cr.end) : undefined;
    if (!part) {
      discard(res);
      return false;
    }
    await readBodyInto(res, part.buf);
    part.done = true;
    return false;
  }
  const reader = new PartReader(res, Buffer.from(`--${boundary[1] ?? boundary[2]}`, 'latin1'));
  try {
    const ok = await reader.fill(parts, total);
    // What may follow the close delimiter is a line or two; more is not worth a socket.
    if (ok) void reader.drain(1024).catch(() => res.stream.destroy());
    else res.stream.destroy();
    return ok;
  } catch (e) {
    res.stream.destroy();
    throw mapBodyError(res, e);
  }
}

/** Pulls a multipart/byteranges body apart, keeping only the bytes not yet handed out. */
class PartReader {
  readonly #it: AsyncIterator<Buffer>;
  readonly #delimiter: Buffer;
  #carry: Buffer = Buffer.alloc(0);
  #ended = false;

  constructor(res: HttpResponse, delimiter: Buffer) {
    this.#it = (res.stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    this.#delimiter = delimiter;
  }

  /** True when every asked part came, each once and exactly; false at the first deviation. */
  async fill(parts: readonly RangePart[], total: number): Promise<boolean> {
    // The first delimiter may follow a preamble (or the CRLF that belongs to it).
    const first = await this.#until(this.#delimiter, PART_HEADER_LIMIT);
    if (first === undefined) return false;
    for (;;) {
      // "--" closes the body (an epilogue may follow); otherwise only transport padding, then CRLF.
      while (this.#carry.length < 2 && (await this.#more()));
      if (this.#carry[0] === 0x2d && this.#carry[1] === 0x2d) return parts.every((p) => p.done);
      const pad = await this.#until(Buffer.from('\r\n'), 64);
      if (pad === undefined || !/^[ \t]*$/.test(pad.toString('latin1'))) return false;
      const head = await this.#until(Buffer.from('\r\n\r\n'), PART_HEADER_LIMIT);
      if (head === undefined) return false;
      const line = /(?:^|\r\n)content-range[ \t]*:([^\r\n]*)/i.exec(head.toString('latin1'));
      const cr = parseContentRange(line?.[1]);
      if (!cr || (cr.total !== undefined && cr.total !== total)) return false;
      const part = parts.find((p) => p.offset === cr.start && p.offset + p.buf.length - 1 === cr.end);
      if (!part || part.done) return false;
      if (!(await this.#into(part.buf))) return false;
      part.done = true;
      const next = await this.#until(this.#delimiter, 2);
      if (next === undefined || (next.length !== 2 || next[0] !== 0x0d || next[1] !== 0x0a)) return false;
    }
  }

  /** Reads the rest of the body (keeping the socket for another request), or cuts it past `limit` bytes. */
  async drain(limit: number): Promise<void> {
    let n = this.#carry.length;
    this.#carry = Buffer.alloc(0);
    while (n <= limit && (await this.#more())) {
      n += this.#carry.length;
      this.#carry = Buffer.alloc(0);
    }
    if (n > limit) await this.#it.return?.();
  }

  async #more(): Promise<boolean> {
    if (this.#ended) return false;
    const r = await this.#it.next();
    if (r.done) {
      this.#ended = true;
      return false;
    }
    this.#carry = this.#carry.length ? Buffer.concat([this.#carry, r.value]) : r.value;
    return true;
  }

  /** The bytes before the next `pattern` (consumed with it), if it comes within `max` bytes. */
  async #until(pattern: Buffer, max: number): Promise<Buffer | undefined> {
    for (let from = 0; ; ) {
      const at = this.#carry.indexOf(pattern, from);
      if (at >= 0 && at <= max) {
        const before = this.#carry.subarray(0, at);
        this.#carry = this.#carry.subarray(at + pattern.length);
        return before;
      }
      if (at > max || this.#carry.length > max + pattern.length) return undefined;
      from = Math.max(0, this.#carry.length - pattern.length + 1);
      if (!(await this.#more())) return undefined;
    }
  }

  /** Exactly `buf.length` bytes into `buf`; false when the body ends first. */
  async #into(buf: Uint8Array): Promise<boolean> {
    let n = 0;
    for (;;) {
      const take = Math.min(this.#carry.length, buf.length - n);
      buf.set(this.#carry.subarray(0, take), n);
      this.#carry = this.#carry.subarray(take);
      n += take;
      if (n === buf.length) return true;
      if (!(await this.#more())) return false;
    }
  }
}
