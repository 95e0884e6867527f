/**
 * A registry that lies. It serves images from memory like a plain OCI distribution server
 * (manifests by tag or digest, blobs with Range, optional Bearer tokens from its own
 * /token endpoint) until `rule` picks a hostility for a request: headers that disagree
 * with the request, bodies longer than announced or endless, trickles, silence, redirect
 * loops, or any response at all. Hostile answers are written as raw bytes on the socket,
 * so nothing in node:http can tidy them up; each request records how many bytes the
 * server pushed before the client hung up.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { listenTracked } from './fault-proxy.ts';

export type Hostility =
  /** 206 whose Content-Range starts one byte later than asked (the body is that range). */
  | { kind: 'wrong-range' }
  /** Content-Length `delta` bytes away from the true length (the body follows it when |delta| ≤ 1 MiB). */
  | { kind: 'wrong-length'; delta: number }
  /** The right headers and bytes, then a forged second response with other bytes. */
  | { kind: 'overlong-body' }
  /** The right status and Content-Range, no length, then bytes forever. */
  | { kind: 'endless' }
  /** The right headers and the first `bytes` of the body, then silence. */
  | { kind: 'stall-after'; bytes: number }
  /** The right headers, then one body byte every `everyMs`. */
  | { kind: 'trickle'; everyMs: number }
  /** A status line, then one header byte every `everyMs`, never ending the headers. */
  | { kind: 'trickle-headers'; everyMs: number }
  /** Reads the request and never answers. */
  | { kind: 'silent' }
  /** 302 back to the same URL. */
  | { kind: 'redirect-loop' }
  /** An answer chosen whole by the test. */
  | { kind: 'respond'; status: number; headers?: Record<string, string>; body?: string | Buffer }
  /** These bytes and nothing else, HTTP or not; then the connection closes. */
  | { kind: 'raw'; bytes: string | Buffer };

export interface HostileRequest {
  readonly n: number;
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  /** The Range asked for (bytes=start-end), if any. */
  readonly range: { start: number; end: number | undefined } | undefined;
  /** The hostility applied, if any. */
  hostility: Hostility['kind'] | undefined;
  /** Bytes written to the socket for this answer by the time it closed (hostile answers only). */
  bytesSent: number | undefined;
}

export interface HostileRegistry {
  readonly host: string;
  readonly port: number;
  /** Picks a hostility per request (undefined = answer honestly). */
  rule: (r: HostileRequest) => Hostility | undefined;
  readonly seen: HostileRequest[];
  /** Stores a blob; returns its digest. */
  putBlob(bytes: Uint8Array): string;
  /** Stores a manifest under its digest and, when given, a tag; returns the digest. */
  putManifest(repo: string, bytes: Uint8Array | string, mediaType: string, tag?: string): string;
  /** Stores a one-platform OCI image of `layers` (bottom → top) and tags it. */
  putImage(repo: string, tag: string, layers: Uint8Array[]): { digest: string; layers: string[] };
  stop(): Promise<void>;
}

export interface HostileOptions {
  /** Require `Authorization: Bearer <token>` from the /token endpoint on every /v2/ request. */
  bearer?: boolean;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const TOKEN = 'hostile-registry-token';

const digestOf = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

export async function startHostileRegistry(opts: HostileOptions = {}): Promise<HostileRegistry> {
  const blobs = new Map<string, Buffer>();
  const manifests = new Map<string, { bytes: Buffer; mediaType: string }>();
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const seen: HostileRequest[] = [];
  let n = 0;

  const state: HostileRegistry = {
    host: '',
    port: 0,
    rule: () => undefined,
    seen,
    putBlob(bytes) {
      const d = digestOf(bytes);
      blobs.set(d, Buffer.from(bytes));
      return d;
    },
    putManifest(repo, bytes, mediaType, tag) {
      const b = Buffer.from(bytes);
      const d = digestOf(b);
      manifests.set(`${repo}@${d}`, { bytes: b, mediaType });
      if (tag !== undefined) manifests.set(`${repo}:${tag}`, { bytes: b, mediaType });
      return d;
    },
    putImage(repo, tag, layers) {
      const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
      const descs = layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: state.putBlob(l), size: l.length }));
      const manifest = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: state.putBlob(config), size: config.length }, layers: descs };
      return { digest: state.putManifest(repo, JSON.stringify(manifest), OCI_MANIFEST, tag), layers: descs.map((d) => d.digest) };
    },
    async stop() {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  /** Takes the socket over from node:http: the answer is whatever bytes we write. */
  function raw(req: http.IncomingMessage, info: HostileRequest): net.Socket {
    const s = req.socket;
    s.on('error', () => {});
    s.once('close', () => {
      info.bytesSent = s.bytesWritten;
    });
    return s;
  }

  function every(ms: number, s: net.Socket, fn: () => void): void {
    const t = setInterval(() => (s.destroyed ? (clearInterval(t), timers.delete(t)) : fn()), ms);
    timers.add(t);
  }

  /** The honest answer: status, headers and body for a request. */
  function honest(req: http.IncomingMessage, path: string): { status: number; headers: Record<string, string>; body: Buffer } {
    const json = (status: number, doc: unknown) => ({ status, headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify(doc)) });
    if (path === '/token') return json(200, { token: TOKEN, expires_in: 300 });
    if (path === '/v2/' || path === '/v2') return json(200, {});
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (!m) return json(404, { errors: [{ code: 'NOT_FOUND', message: path }] });
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    if (kind === 'manifests') {
      const hit = manifests.get(ref.includes(':') ? `${repo}@${ref}` : `${repo}:${ref}`);
      if (!hit) return json(404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: ref }] });
      return { status: 200, headers: { 'content-type': hit.mediaType, 'docker-content-digest': digestOf(hit.bytes) }, body: hit.bytes };
    }
    const blob = blobs.get(ref);
    if (!blob) return json(404, { errors: [{ code: 'BLOB_UNKNOWN', message: ref }] });
    const r = rangeOf(req.headers.range);
    if (!r) return { status: 200, headers: { 'content-type': 'application/octet-stream' }, body: blob };
    const end = Math.min(r.end ?? blob.length - 1, blob.length - 1);
    if (r.start >= blob.length) return { status: 416, headers: { 'content-range': `bytes */${blob.length}` }, body: Buffer.alloc(0) };
    return { status: 206, headers: { 'content-type': 'application/octet-stream', 'content-range': `bytes ${r.start}-${end}/${blob.length}` }, body: blob.subarray(r.start, end + 1) };
  }

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const info: HostileRequest = { n: n++, method: req.method ?? 'GET', path, headers: req.headers, range: rangeOf(req.headers.range), hostility: undefined, bytesSent: undefined };
    seen.push(info);
    req.resume();
    if (opts.bearer && path.startsWith('/v2') && req.headers.authorization !== `Bearer ${TOKEN}`) {
      const realm = `http://${state.host}/token`;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="hostile",scope="repository:x:pull"`, 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      return;
    }
    const h = state.rule(info);
    info.hostility = h?.kind;
    const a = honest(req, path);
    const head = (status: number, headers: Record<string, string>) =>
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'X'}\r\n` + Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n';
    if (!h) {
      res.writeHead(a.status, { ...a.headers, 'content-length': String(a.body.length) });
      res.end(req.method === 'HEAD' ? undefined : a.body);
      return;
    }
    if (h.kind === 'redirect-loop') {
      res.writeHead(302, { location: req.url ?? '/', 'content-length': '0' }).end();
      return;
    }
    if (h.kind === 'respond') {
      const body = Buffer.from(h.body ?? '');
      res.writeHead(h.status, { 'content-length': String(body.length), ...h.headers }).end(body);
      return;
    }
    const s = raw(req, info);
    switch (h.kind) {
      case 'silent':
        return;
      case 'raw':
        s.end(h.bytes);
        return;
      case 'wrong-range': {
        const r = info.range ?? { start: 0, end: undefined };
        const start = r.start + 1;
        const total = Number(/\/(\d+)$/.exec(a.headers['content-range'] ?? '')?.[1] ?? a.body.length);
        const body = Buffer.concat([a.body.subarray(1), Buffer.alloc(1)]);
        s.write(head(206, { 'content-range': `bytes ${start}-${start + body.length - 1}/${total}`, 'content-length': String(body.length) }));
        s.end(body);
        return;
      }
      case 'wrong-length': {
        // The body matches the false length when that is within 1 MiB of the truth; a larger
        // claim gets the true bytes and an open socket (a client should refuse it up front).
        const len = Math.max(0, a.body.length + h.delta);
        s.write(head(a.status, { ...a.headers, 'content-length': String(len) }));
        s.write(a.body.subarray(0, len));
        if (len > a.body.length && h.delta <= 1 << 20) s.write(Buffer.alloc(len - a.body.length));
        if (h.delta <= 1 << 20) s.end();
        return;
      }
      case 'overlong-body': {
        const forged = Buffer.alloc(a.body.length, 0xee);
        s.write(head(a.status, { ...a.headers, 'content-length': String(a.body.length) }));
        s.write(a.body);
        // A second answer nobody asked for, ready to be mistaken for the next request's.
        s.write(head(a.status, { ...a.headers, 'content-length': String(forged.length) }));
        s.write(forged);
        return;
      }
      case 'endless': {
        const { 'content-length': _, ...headers } = a.headers as Record<string, string>;
        s.write(head(a.status, { ...headers, connection: 'close' }));
        const chunk = Buffer.alloc(64 * 1024, 0x41);
        const pump = () => {
          while (!s.destroyed && s.write(chunk));
          if (!s.destroyed) s.once('drain', pump);
        };
        pump();
        return;
      }
      case 'stall-after':
        s.write(head(a.status, { ...a.headers, 'content-length': String(a.body.length) }));
        s.write(a.body.subarray(0, h.bytes));
        return;
      case 'trickle': {
        s.write(head(a.status, { ...a.headers, 'content-length': String(a.body.length) }));
        let i = 0;
        every(h.everyMs, s, () => (i < a.body.length ? s.write(a.body.subarray(i, ++i)) : s.end()));
        return;
      }
      case 'trickle-headers': {
        s.write(`HTTP/1.1 ${a.status} OK\r\nx-slow: `);
        every(h.everyMs, s, () => s.write('a'));
        return;
      }
    }
  });
  const port = await listenTracked(server, sockets);
  Object.assign(state, { port, host: `127.0.0.1:${port}` });
  return state;
}

function rangeOf(h: string | undefined): { start: number; end: number | undefined } | undefined {
  const m = /^bytes=(\d+)-(\d*)$/.exec(h ?? '');
  return m ? { start: Number(m[1]), end: m[2] ? Number(m[2]) : undefined } : undefined;
}

/**
 * A loopback port where TCP connects hang: a listener with a backlog of one, stopped
 * (SIGSTOP) so it accepts nothing, its queue filled, so the kernel drops further SYNs.
 */
export async function startHangingListener(): Promise<{ host: string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ['-e', "const s = require('net').createServer(); s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => console.log(s.address().port))"], { stdio: ['ignore', 'pipe', 'ignore'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d) => resolve(Number(String(d).trim())));
    child.once('exit', () => reject(new Error('listener exited')));
  });
  child.kill('SIGSTOP');
  const fillers: net.Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const f = net.connect(port, '127.0.0.1');
    f.on('error', () => {});
    fillers.push(f);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    host: `127.0.0.1:${port}`,
    async stop() {
      for (const f of fillers) f.destroy();
      child.kill('SIGKILL');
      await exited;
    },
  };
}
