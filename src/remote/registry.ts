/**
 * OCI distribution client: manifests, blobs (HEAD, ranged GET, streamed GET), uploads
 * (POST + PUT, chunked PATCH, cross-repository mount), with auth, redirects that never
 * carry Authorization to another origin, and retries with backoff and jitter.
 */
import type { ByteSource } from '../io/types.ts';
import { readable } from '../io/util.ts';
import { Authenticator, CredentialStore } from './auth.ts';
import { AuthError, DigestMismatchError, isRetryable, NetworkError, ProtocolError, RemoteNotFoundError, ServerError } from './errors.ts';
import { discard, multiRangeHeader, parseContentRange, rangeHeader, readBody, redact, takeRange, takeRanges, Transport, withRetries, type BodySource, type HttpResponse, type RangePart, type TransportOptions } from './http.ts';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, sha256Digest, sniffMediaType, type FetchedManifest } from './manifest.ts';
import { isDigest, isLoopbackHost } from './reference.ts';
import type { PutBlobOptions, PutBlobResult, Repository } from './store.ts';

export interface RegistryOptions extends TransportOptions {
  /** Use http:// (default: only for loopback hosts, and not with `insecure`). */
  plainHttp?: boolean;
  /** Credentials; default: none (anonymous). */
  credentials?: CredentialStore;
  /** Attempts after the first for retryable failures (default 4). */
  retries?: number;
  /** First backoff delay; doubles per attempt, with ±50 % jitter (default 200 ms). */
  retryBaseMs?: number;
  /** Told of each retry (metrics). */
  onRetry?: () => void;
  /** Stops retrying once aborted (a cancelled background push). */
  signal?: AbortSignal;
  /** Blobs larger than this upload in PATCH chunks of this size (default 16 MiB). */
  chunkSize?: number;
  /** Ask several ranges of a blob in one request (default true; see RegistryRepository.readRanges). */
  multiRange?: boolean;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Redirects followed per request; a loop ends here with a ProtocolError. */
export const MAX_REDIRECTS = 5;

/** A connection to one registry host; hands out repositories sharing its sockets. */
export class RegistryClient {
  readonly host: string;
  readonly base: URL;
  readonly transport: Transport;
  readonly opts: Readonly<RegistryOptions>;
  readonly credentials: CredentialStore;
  /**
   * Whether blob reads may ask several ranges in one request. Cleared the first time the
   * registry (or the store it redirects to) answers one otherwise than range by range.
   */
  multiRange: boolean;

  constructor(host: string, opts: RegistryOptions = {}) {
    this.host = host;
    // Loopback registries speak plain HTTP by default, unless --insecure asks for (unverified) TLS.
    const plain = opts.plainHttp ?? (opts.insecure ? false : isLoopbackHost(host));
    this.base = new URL(`${plain ? 'http' : 'https'}://${host}`);
    this.transport = new Transport(opts);
    this.opts = opts;
    this.credentials = opts.credentials ?? new CredentialStore();
    this.multiRange = opts.multiRange ?? true;
  }

  repository(name: string): RegistryRepository {
    return new RegistryRepository(this, name);
  }

  async close(): Promise<void> {
    this.transport.close();
  }
}

interface SendRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: Uint8Array | BodySource;
}

export class RegistryRepository implements Repository {
  readonly client: RegistryClient;
  readonly repository: string;
  readonly name: string;
  readonly kind = 'registry';
  readonly #auth: Authenticator;
  readonly #pull: string;
  readonly #push: string;

  constructor(client: RegistryClient, repository: string) {
    this.client = client;
    this.repository = repository;
    this.name = `${client.host}/${repository}`;
    this.#auth = new Authenticator(client.transport, client.credentials.find(client.host, repository));
    this.#pull = `repository:${repository}:pull`;
    this.#push = `repository:${repository}:pull,push`;
  }

  /** `scheme://host/v2/<repo>/<rest>` */
  url(rest: string): URL {
    return new URL(`/v2/${this.repository}/${rest}`, this.client.base);
  }

  blobUrl(digest: string): URL {
    return this.url(`blobs/${digest}`);
  }

  /**
   * One exchange, with the auth dance and redirects. Authorization goes only to the
   * registry's own origin; a redirect elsewhere (blob storage, a CDN) gets none.
   */
  async #send(req: SendRequest, scope: string): Promise<HttpResponse> {
    const origin = this.client.base.origin;
    let url = req.url;
    let authRounds = 0;
    let redirects = 0;
    for (;;) {
      const headers: Record<string, string> = { ...req.headers };
      const own = url.origin === origin;
      if (own) {
        const a = this.#auth.header(scope);
        if (a) headers.authorization = a;
      }
      const res = await this.client.transport.request({ method: req.method, url, headers, body: req.body });
      if (res.status === 401 && own) {
        discard(res);
        if (authRounds++ >= 2) throw new AuthError(redact(url), 'still unauthorized after authenticating', 401);
        // A concurrent request may have authenticated while this one was on the wire.
        if (!headers.authorization && this.#auth.header(scope)) continue;
        if (headers.authorization) this.#auth.invalidate(scope);
        const www = res.headers['www-authenticate'];
        await this.#auth.answer(Array.isArray(www) ? www[0] : www, scope, url);
        continue;
      }
      if (REDIRECTS.has(res.status) && res.headers.location && (req.method === 'GET' || req.method === 'HEAD')) {
        discard(res);
        if (++redirects > MAX_REDIRECTS) throw new ProtocolError(redact(req.url), `more than ${MAX_REDIRECTS} redirects (last to ${redact(url)})`, res.status);
        url = redirectTarget(url, res.headers.location, res.status);
        continue;
      }
      if (res.status >= 500 || res.status === 429) {
        discard(res);
        throw new ServerError(redact(url), `${req.method} answered ${res.status}`, res.status);
      }
      return res;
    }
  }

  /** Runs `fn` again on retryable failures (the client's retry settings). */
  #retry<T>(fn: () => Promise<T>): Promise<T> {
    return withRetries(fn, this.client.opts);
  }

  /** Turns an unexpected status into the matching typed error (reads the registry's error JSON). */
  async #fail(res: HttpResponse, what: string): Promise<never> {
    let detail = '';
    try {
      const body = await readBody(res, 65536);
      const doc = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: string; message?: string }> };
      detail = (doc.errors ?? []).map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
    } catch {
      // no readable error document; the status says enough
    }
    const where = redact(res.url);
    const suffix = detail ? ` (${detail})` : '';
    if (res.status === 404) throw new RemoteNotFoundError(where, what);
    if (res.status === 401 || res.status === 403) throw new AuthError(where, `access to ${what} denied (${res.status})${suffix}`, res.status);
    throw new ProtocolError(where, `${what}: unexpected status ${res.status}${suffix}`, res.status);
  }

  /** Pings `/v2/` (auth included), proving the registry speaks the distribution API. */
  async ping(): Promise<void> {
    await this.#retry(async () => {
      const res = await this.#send({ method: 'GET', url: new URL('/v2/', this.client.base) }, this.#pull);
      discard(res);
      if (res.status !== 200) await this.#fail(res, 'the /v2/ API');
    });
  }

  async getManifest(reference: string): Promise<FetchedManifest> {
    return this.#retry(async () => {
      const res = await this.#send({ method: 'GET', url: this.url(`manifests/${reference}`), headers: { accept: MANIFEST_ACCEPT } }, this.#pull);
      if (res.status !== 200) await this.#fail(res, `manifest ${reference}`);
      const bytes = await readBody(res, MAX_MANIFEST_BYTES);
      const digest = sha256Digest(bytes);
      if (isDigest(reference) && reference.startsWith('sha256:') && digest !== reference) throw new DigestMismatchError(`${this.name} manifest`, reference, digest);
      // By tag, the digest the registry names is what a signature or a pinned reference covers.
      const named = res.headers['docker-content-digest'];
      if (!isDigest(reference) && typeof named === 'string' && named.startsWith('sha256:') && named !== digest) throw new DigestMismatchError(`${this.name} manifest ${reference}`, named, digest);
      const ct = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
      return { bytes, digest, mediaType: sniffMediaType(bytes, ct) };
    });
  }

  async putManifest(bytes: Uint8Array, mediaType: string, tag?: string): Promise<string> {
    const digest = sha256Digest(bytes);
    await this.#retry(async () => {
      const res = await this.#send({ method: 'PUT', url: this.url(`manifests/${tag ?? digest}`), headers: { 'content-type': mediaType }, body: bytes }, this.#push);
      discard(res);
      if (res.status !== 201 && res.status !== 200) await this.#fail(res, `manifest upload ${tag ?? digest}`);
    });
    return digest;
  }

  async statBlob(digest: string): Promise<number | undefined> {
    return this.#retry(async () => {
      const res = await this.#send({ method: 'HEAD', url: this.blobUrl(digest) }, this.#pull);
      discard(res);
      if (res.status === 404) return undefined;
      if (res.status !== 200) await this.#fail(res, `blob ${digest}`);
      const len = Number(res.headers['content-length']);
      if (!Number.isSafeInteger(len) || len < 0) throw new ProtocolError(redact(res.url), `HEAD of blob ${digest} has no Content-Length`, res.status);
      return len;
    });
  }

  async openBlob(digest: string, size?: number): Promise<ByteSource> {
    const n = size ?? (await this.statBlob(digest));
    if (n === undefined) throw new RemoteNotFoundError(redact(this.blobUrl(digest)), `blob ${digest}`);
    return new RegistryBlobSource(this, digest, n);
  }

  /**
   * Fills `buf` with blob bytes at `offset` using one Range GET (retried). Only a 206 whose
   * Content-Range is exactly the asked range is accepted, or a 200 carrying the whole blob
   * when the whole blob was asked; a server ignoring Range cannot feed wrong bytes.
   */
  async readRange(digest: string, buf: Uint8Array, offset: number, blobSize: number): Promise<void> {
    await this.#retry(async () => {
      const res = await this.#send({ method: 'GET', url: this.blobUrl(digest), headers: { range: rangeHeader(offset, buf.length) } }, this.#pull);
      if (!(await takeRange(res, buf, offset, blobSize))) await this.#fail(res, `blob ${digest} range ${offset}-${offset + buf.length - 1}`);
    });
  }

  /**
   * Fills several ranges of a blob with one multi-range GET where the registry serves them
   * (distribution's filesystem storage does, through Go's http.ServeContent), retrying the
   * ranges still missing. Where the answer is not range by range (a 200, a single range, a
   * malformed multipart body) the client stops asking so and the missing ranges go out as
   * separate requests. The ranges must not overlap.
   */
  async readRanges(digest: string, parts: readonly RangePart[], blobSize: number): Promise<void> {
    const client = this.client;
    if (client.multiRange && parts.length > 1) {
      await this.#retry(async () => {
        const left = parts.filter((p) => !p.done);
        if (left.length === 0 || !client.multiRange) return;
        const res = await this.#send({ method: 'GET', url: this.blobUrl(digest), headers: { range: multiRangeHeader(left) } }, this.#pull);
        const whole = await takeRanges(res, left, blobSize);
        if (whole === true) return;
        // A refusal that one range at a time would meet too is named now; any other (a 416
        // or 400 for the list itself) leaves the ranges to separate requests.
        if (whole === undefined && (res.status === 401 || res.status === 403 || res.status === 404)) await this.#fail(res, `blob ${digest}`);
        if (whole === undefined) discard(res);
        client.multiRange = false;
      });
    }
    const rest = parts.filter((p) => !p.done);
    await Promise.all(
      rest.map(async (p) => {
        await this.readRange(digest, p.buf, p.offset, blobSize);
        p.done = true;
      }),
    );
  }

  /** Streams the blob from `offset`, resuming with a Range request after a broken connection. */
  async *streamBlob(digest: string, offset = 0): AsyncIterable<Uint8Array> {
    let pos = offset;
    const retries = this.client.opts.retries ?? 4;
    let failures = 0;
    for (;;) {
      const res = await this.#retry(async () => {
        const headers: Record<string, string> = pos > 0 ? { range: `bytes=${pos}-` } : {};
        const r = await this.#send({ method: 'GET', url: this.blobUrl(digest), headers }, this.#pull);
        if (r.status === 200 && pos === 0) return r;
        if (r.status === 206 && pos > 0) {
          const cr = parseContentRange(r.headers['content-range']);
          if (cr && cr.start === pos) return r;
          discard(r);
          throw new ProtocolError(redact(r.url), `resume at ${pos} got Content-Range "${r.headers['content-range'] ?? ''}"`, 206);
        }
        if (r.status === 416 && pos > 0) {
          discard(r);
          return r;
        }
        if (r.status === 200) {
          r.stream.destroy();
          throw new ProtocolError(redact(r.url), `server ignored Range bytes=${pos}- when resuming`, 200);
        }
        return this.#fail(r, `blob ${digest}`);
      });
      if (res.status === 416) return;
      const len = Number(res.headers['content-length']);
      let got = 0;
      try {
        for await (const chunk of res.stream as AsyncIterable<Buffer>) {
          got += chunk.length;
          pos += chunk.length;
          yield chunk;
        }
        if (Number.isFinite(len) && got !== len) throw new NetworkError(redact(res.url), `body ended after ${got} of ${len} bytes`, res.status);
        return;
      } catch (e) {
        const err = isRetryable(e) ? e : res.abortReason ?? (e instanceof ProtocolError ? e : new NetworkError(redact(res.url), `body failed at ${pos}: ${(e as Error).message}`, res.status, { cause: e }));
        if (!isRetryable(err) || ++failures > retries) throw err;
        res.stream.destroy();
      }
    }
  }

  /** Mounts `digest` from another repository of this registry; false when the registry declines. */
  async mountBlob(digest: string, from: string): Promise<boolean> {
    const url = this.url(`blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`);
    return this.#retry(async () => {
      const res = await this.#send({ method: 'POST', url }, `${this.#push} repository:${from}:pull`);
      discard(res);
      if (res.status === 201) return true;
      if (res.status === 202) {
        const loc = res.headers.location;
        if (loc) await this.#cancelUpload(new URL(loc, res.url));
        return false;
      }
      return this.#fail(res, `mount of ${digest} from ${from}`);
    });
  }

  async #cancelUpload(loc: URL): Promise<void> {
    try {
      const res = await this.#send({ method: 'DELETE', url: loc }, this.#push);
      discard(res);
    } catch {
      // an abandoned upload session expires on the server by itself
    }
  }

  async putBlob(digest: string, content: ByteSource, opts: PutBlobOptions = {}): Promise<PutBlobResult> {
    if (!isDigest(digest)) throw new ProtocolError(this.name, `cannot upload under a malformed digest "${digest}"`);
    const have = await this.statBlob(digest);
    if (have !== undefined) {
      if (have !== content.size) throw new ProtocolError(redact(this.blobUrl(digest)), `blob exists with size ${have}, but the local blob has ${content.size} bytes`);
      return 'exists';
    }
    for (const from of opts.mountFrom ?? []) {
      if (from !== this.repository && (await this.mountBlob(digest, from))) return 'mounted';
    }
    await this.#retry(() => this.#upload(digest, content, opts.onProgress));
    return 'uploaded';
  }

  async #upload(digest: string, content: ByteSource, onProgress?: (n: number) => void): Promise<void> {
    const chunk = this.client.opts.chunkSize ?? 16 << 20;
    const start = await this.#send({ method: 'POST', url: this.url('blobs/uploads/') }, this.#push);
    discard(start);
    if (start.status !== 202 || !start.headers.location) await this.#fail(start, `upload start for ${digest}`);
    let loc = new URL(start.headers.location!, start.url);
    const size = content.size;
    let sent = 0;
    const progress = (n: number) => {
      sent += n;
      onProgress?.(sent);
    };
    let finalBody: BodySource | undefined;
    if (size <= chunk) finalBody = sourceBody(content, 0, size, progress);
    else {
      for (let off = 0; off < size; off += chunk) {
        const len = Math.min(chunk, size - off);
        const res = await this.#send(
          {
            method: 'PATCH',
            url: loc,
            headers: { 'content-type': 'application/octet-stream', 'content-range': `${off}-${off + len - 1}` },
            body: sourceBody(content, off, len, progress),
          },
          this.#push,
        );
        discard(res);
        if (res.status !== 202 || !res.headers.location) await this.#fail(res, `upload chunk ${off}-${off + len - 1} of ${digest}`);
        loc = new URL(res.headers.location!, res.url);
      }
    }
    loc.searchParams.set('digest', digest);
    const done = await this.#send(
      { method: 'PUT', url: loc, headers: { 'content-type': 'application/octet-stream' }, body: finalBody ?? new Uint8Array(0) },
      this.#push,
    );
    discard(done);
    if (done.status !== 201) await this.#fail(done, `upload of ${digest}`);
    const echoed = done.headers['docker-content-digest'];
    if (typeof echoed === 'string' && echoed !== digest) throw new DigestMismatchError(`${this.name} upload`, digest, echoed);
  }

  async close(): Promise<void> {}
}

/** A request body read from a source range in 1 MiB pieces; re-openable for retries. */
function sourceBody(src: ByteSource, offset: number, length: number, progress: (n: number) => void): BodySource {
  return {
    length,
    async *open() {
      for (let pos = 0; pos < length; ) {
        const buf = new Uint8Array(Math.min(1 << 20, length - pos));
        const n = await src.read(buf, offset + pos);
        if (n !== buf.length) throw new NetworkError(src.name, `local blob shorter than expected at ${offset + pos}`);
        pos += n;
        progress(n);
        yield buf;
      }
    },
  };
}

/** Where a redirect points; only http(s) targets are followed. */
function redirectTarget(from: URL, location: string, status: number): URL {
  let to: URL;
  try {
    to = new URL(location, from);
  } catch {
    throw new ProtocolError(redact(from), `redirect to a malformed Location "${location.slice(0, 200)}"`, status);
  }
  if (to.protocol !== 'http:' && to.protocol !== 'https:') throw new ProtocolError(redact(from), `redirect to a ${to.protocol} URL, which is not followed`, status);
  return to;
}

/** Ranges asked together at most, and their bytes (Go's ServeContent also wants them under the blob's size). */
const BATCH_PARTS = 16;
const BATCH_BYTES = 16 << 20;

interface PendingRead extends RangePart {
  resolve(): void;
  reject(e: unknown): void;
}

/**
 * A registry blob as a ByteSource: each read is a Range GET into the caller's buffer. Reads
 * issued in the same turn of the event loop (the head and tail an open prefetches, a burst
 * of misses) leave together as one multi-range request where the registry takes those.
 */
export class RegistryBlobSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  readonly digest: string;
  readonly repository: RegistryRepository;
  #pending: PendingRead[] = [];

  constructor(repo: RegistryRepository, digest: string, size: number) {
    this.repository = repo;
    this.digest = digest;
    this.size = size;
    this.name = redact(repo.blobUrl(digest));
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    const view = readable(buf, offset, this.size);
    if (view.length === 0) return 0;
    if (!this.repository.client.multiRange) {
      await this.repository.readRange(this.digest, view, offset, this.size);
      return view.length;
    }
    await new Promise<void>((resolve, reject) => {
      if (this.#pending.push({ buf: view, offset, done: false, resolve, reject }) === 1) setImmediate(() => this.#flush());
    });
    return view.length;
  }

  /** Sends what was asked this turn: non-overlapping ranges in batches, each batch one request. */
  #flush(): void {
    const all = this.#pending.sort((a, b) => a.offset - b.offset);
    this.#pending = [];
    while (all.length > 0) {
      const batch: PendingRead[] = [];
      const rest: PendingRead[] = [];
      let end = -1;
      let bytes = 0;
      for (const r of all) {
        if (r.offset >= end && batch.length < BATCH_PARTS && bytes + r.buf.length <= Math.min(BATCH_BYTES, this.size)) {
          batch.push(r);
          end = r.offset + r.buf.length;
          bytes += r.buf.length;
        } else rest.push(r);
      }
      // A range too large to share a request goes alone.
      if (batch.length === 0) batch.push(rest.shift()!);
      all.splice(0, all.length, ...rest);
      this.repository.readRanges(this.digest, batch, this.size).then(
        () => batch.forEach((r) => r.resolve()),
        (e) => batch.forEach((r) => (r.done ? r.resolve() : r.reject(e))),
      );
    }
  }

  async close(): Promise<void> {}
}
