/**
 * A small Bearer token server for docker-registry's `auth.token`: RS256 JWTs whose header
 * carries the signing certificate (x5c), made with openssl. Checks Basic credentials when
 * users are given and grants what `grant` allows.
 */
import { execFileSync } from 'node:child_process';
import { createSign, randomBytes, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { makeTempDir, removeTempDir } from '../../helpers/temp.ts';

export interface Access {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenServerOptions {
  /** user → password; when set, token requests need matching Basic credentials (else anonymous). */
  users?: Record<string, string>;
  /** Let requests without credentials get tokens (for pull-only registries). */
  anonymous?: boolean;
  /** Which actions a user (undefined = anonymous) gets for a requested access; default: all asked. */
  grant?: (user: string | undefined, asked: Access) => string[];
  /** `expires_in` in seconds (default 300). */
  ttlSeconds?: number;
}

export interface TokenServer {
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  readonly certPath: string;
  /** Token requests seen, with the scopes asked. */
  readonly requests: Array<{ user: string | undefined; scopes: string[] }>;
  /** The next `n` token requests answer 503. */
  failNext(n: number): void;
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export async function startTokenServer(opts: TokenServerOptions = {}): Promise<TokenServer> {
  const dir = await makeTempDir('obd-token-');
  const keyPath = path.join(dir, 'key.pem');
  const certPath = path.join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=obd-test-token'], { stdio: 'ignore' });
  const key = await readFile(keyPath, 'utf8');
  const certDer = new X509Certificate(await readFile(certPath)).raw;
  const service = 'obd-test-registry';
  const issuer = 'obd-test-issuer';
  const ttl = opts.ttlSeconds ?? 300;
  const requests: TokenServer['requests'] = [];
  let failing = 0;

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    if (failing > 0) {
      failing--;
      res.writeHead(503).end('try later');
      return;
    }
    let user: string | undefined;
    const auth = req.headers.authorization;
    if (auth?.startsWith('Basic ')) {
      const plain = Buffer.from(auth.slice(6), 'base64').toString();
      const i = plain.indexOf(':');
      const u = plain.slice(0, i);
      if (!opts.users || opts.users[u] !== plain.slice(i + 1)) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
        return;
      }
      user = u;
    } else if (opts.users && !opts.anonymous) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"credentials required"}');
      return;
    }
    const scopes = url.searchParams.getAll('scope');
    requests.push({ user, scopes });
    const access: Access[] = [];
    for (const s of scopes.flatMap((x) => x.split(' '))) {
      const [type, name, acts] = s.split(':');
      if (!type || !name || !acts) continue;
      const asked = { type, name, actions: acts.split(',') };
      const actions = opts.grant ? opts.grant(user, asked) : asked.actions;
      if (actions.length) access.push({ type, name, actions });
    }
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'RS256', typ: 'JWT', x5c: [certDer.toString('base64')] };
    const claims = { iss: issuer, sub: user ?? '', aud: url.searchParams.get('service') ?? service, exp: now + ttl, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
    const signing = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign('RSA-SHA256').update(signing).sign(key);
    const token = `${signing}.${b64url(sig)}`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: ttl, issued_at: new Date(now * 1000).toISOString() }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certPath,
    requests,
    failNext(n: number) {
      failing = n;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await removeTempDir(dir);
    },
  };
}
