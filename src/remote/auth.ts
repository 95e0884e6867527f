/**
 * Registry credentials and the auth dance: anonymous first; on 401 the challenge decides
 * between Basic (credentials from a docker-config-style file) and Bearer (a token fetched
 * from the challenge's realm, cached per scope until shortly before it expires).
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AuthError, ProtocolError, ServerError } from './errors.ts';
import { readBody, redact, type Transport } from './http.ts';

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

/**
 * Credentials by registry, from files in docker config.json / overlaybd cred.json shape:
 * `{"auths": {"<host[/path]>": {"auth": base64(user:pass)} | {"username","password"}}}`.
 * Lookup follows the reference: candidates are `host`, `host/p1`, `host/p1/p2`… of the
 * repository, and the first key in file order equal to a candidate wins.
 */
export class CredentialStore {
  readonly #entries: Array<{ key: string; creds: Credentials }> = [];

  add(key: string, creds: Credentials): void {
    this.#entries.push({ key: normaliseKey(key), creds });
  }

  find(host: string, repository: string): Credentials | undefined {
    const candidates = new Set<string>([normaliseKey(host)]);
    let acc = normaliseKey(host);
    for (const part of repository.split('/')) {
      acc += '/' + part;
      candidates.add(acc);
    }
    if (host === 'registry-1.docker.io') candidates.add('docker.io');
    return this.#entries.find((e) => candidates.has(e.key))?.creds;
  }

  get size(): number {
    return this.#entries.length;
  }

  /** Loads `--creds-file` (if given) then the docker config; earlier files win ties. */
  static async load(opts: { credsFile?: string; dockerConfig?: string | false } = {}): Promise<CredentialStore> {
    const store = new CredentialStore();
    if (opts.credsFile) await store.#loadFile(opts.credsFile, true);
    if (opts.dockerConfig !== false) {
      const file = opts.dockerConfig ?? path.join(process.env.DOCKER_CONFIG ?? path.join(os.homedir(), '.docker'), 'config.json');
      await store.#loadFile(file, opts.dockerConfig !== undefined);
    }
    return store;
  }

  async #loadFile(file: string, required: boolean): Promise<void> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if (!required && (e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new AuthError(file, `cannot read credentials: ${(e as Error).message}`);
    }
    let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new AuthError(file, `not JSON: ${(e as Error).message}`);
    }
    for (const [key, v] of Object.entries(doc.auths ?? {})) {
      if (v?.username !== undefined && v.password !== undefined) this.add(key, { username: v.username, password: v.password });
      else if (v?.auth) {
        const plain = Buffer.from(v.auth, 'base64').toString('utf8');
        const i = plain.indexOf(':');
        if (i < 0) throw new AuthError(file, `auths["${key}"].auth is not base64("user:password")`);
        this.add(key, { username: plain.slice(0, i), password: plain.slice(i + 1) });
      }
    }
  }
}

function normaliseKey(key: string): string {
  let k = key.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
  k = k.replace(/\/v[12]$/, '');
  if (k === 'index.docker.io' || k === 'registry-1.docker.io') k = 'docker.io';
  return k;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="…",service="…",scope="…"` (quoted or token values). */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/g;
  for (let p = re.exec(m[2]!); p; p = re.exec(m[2]!)) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  return { scheme: m[1]!.toLowerCase(), params };
}

/** Longest token accepted (registries' header limits are around 8–16 KiB). */
const MAX_TOKEN_CHARS = 16384;
/** An `expires_in` beyond a day is not believed (a token is refetched on 401 anyway). */
const MAX_TOKEN_LIFE_S = 86400;

interface Token {
  value: string;
  expires: number;
}

/**
 * Auth state for one registry host and repository credentials. `header(scope)` is
 * synchronous on the hot path; `answer(challenge)` does the slow work after a 401.
 */
export class Authenticator {
  readonly #transport: Transport;
  readonly #creds: Credentials | undefined;
  readonly #tokens = new Map<string, Token>();
  readonly #pending = new Map<string, Promise<void>>();
  #basic = false;
  /** Refresh this long before the server's expiry, so a token never dies mid-request. */
  readonly #marginMs = 5000;

  constructor(transport: Transport, creds: Credentials | undefined) {
    this.#transport = transport;
    this.#creds = creds;
  }

  /** The Authorization value to send for `scope`, if one is known and fresh. */
  header(scope: string): string | undefined {
    if (this.#basic && this.#creds) return basic(this.#creds);
    const t = this.#tokens.get(scope);
    if (t && t.expires > Date.now()) return `Bearer ${t.value}`;
    return undefined;
  }

  /** Forgets the token for `scope` (the server refused it). */
  invalidate(scope: string): void {
    this.#tokens.delete(scope);
  }

  /**
   * Acts on a 401's WWW-Authenticate for a request that needed `scope`. Concurrent
   * callers for one scope share one token request.
   */
  answer(header: string | undefined, scope: string, url: URL): Promise<void> {
    const running = this.#pending.get(scope);
    if (running) return running;
    const p = this.#answer(header, scope, url).finally(() => this.#pending.delete(scope));
    this.#pending.set(scope, p);
    return p;
  }

  async #answer(header: string | undefined, scope: string, url: URL): Promise<void> {
    const ch = header ? parseChallenge(header) : undefined;
    if (!ch) throw new AuthError(redact(url), 'unauthorized, and the server sent no usable WWW-Authenticate challenge', 401);
    if (ch.scheme === 'basic') {
      if (!this.#creds) throw new AuthError(redact(url), 'registry wants Basic credentials; none configured (docker config.json auths or --creds-file)', 401);
      if (this.#basic) throw new AuthError(redact(url), `credentials for user "${this.#creds.username}" were refused`, 401);
      this.#basic = true;
      return;
    }
    if (ch.scheme !== 'bearer') throw new AuthError(redact(url), `unsupported auth scheme "${ch.scheme}"`, 401);
    const realm = ch.params.realm;
    if (!realm) throw new AuthError(redact(url), 'Bearer challenge without realm', 401);
    let tokenUrl: URL;
    try {
      tokenUrl = new URL(realm);
    } catch {
      throw new AuthError(redact(url), `Bearer realm "${realm}" is not a URL`, 401);
    }
    if (tokenUrl.protocol !== 'http:' && tokenUrl.protocol !== 'https:') throw new AuthError(redact(url), `Bearer realm "${realm.slice(0, 200)}" is not an http(s) URL`, 401);
    if (ch.params.service) tokenUrl.searchParams.set('service', ch.params.service);
    const scopes = new Set((ch.params.scope ?? '').split(' ').filter(Boolean));
    for (const s of scope.split(' ')) if (s) scopes.add(s);
    for (const s of scopes) tokenUrl.searchParams.append('scope', s);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.#creds) headers.authorization = basic(this.#creds);
    const res = await this.#transport.request({ method: 'GET', url: tokenUrl, headers });
    const body = await readBody(res, 1 << 20);
    if (res.status === 401 || res.status === 403) throw new AuthError(redact(tokenUrl), `token request refused (${res.status})${this.#creds ? ` for user "${this.#creds.username}"` : '; no credentials configured'}`, res.status);
    if (res.status >= 500 || res.status === 429) throw new ServerError(redact(tokenUrl), `token server answered ${res.status}`, res.status);
    if (res.status !== 200) throw new AuthError(redact(tokenUrl), `token request answered ${res.status}`, res.status);
    let doc: { token?: string; access_token?: string; expires_in?: number; issued_at?: string };
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch {
      throw new ProtocolError(redact(tokenUrl), 'token response is not JSON', res.status);
    }
    const value = doc?.token ?? doc?.access_token;
    if (!value) throw new ProtocolError(redact(tokenUrl), 'token response has neither "token" nor "access_token"', res.status);
    // The token goes into a header: anything but visible ASCII could split or smuggle it.
    if (typeof value !== 'string' || value.length > MAX_TOKEN_CHARS || !/^[\x21-\x7e]+$/.test(value)) {
      throw new ProtocolError(redact(tokenUrl), `token is not a string of at most ${MAX_TOKEN_CHARS} visible ASCII characters`, res.status);
    }
    const expiresIn = typeof doc.expires_in === 'number' && Number.isFinite(doc.expires_in) && doc.expires_in > 0 ? Math.min(doc.expires_in, MAX_TOKEN_LIFE_S) : 60;
    const lifeMs = expiresIn * 1000;
    const start = doc.issued_at ? Math.min(Date.parse(doc.issued_at) || Date.now(), Date.now()) : Date.now();
    this.#tokens.set(scope, { value, expires: start + lifeMs - Math.min(this.#marginMs, lifeMs / 2) });
  }
}

function basic(c: Credentials): string {
  return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64');
}
