/**
 * A client of the control API (docs/control-api.md): `obd snapshot`, `obd compact` and
 * `obd resize` send one request and print the answer. The address is a unix socket path or
 * `http://127.0.0.1:PORT` (then with a bearer token).
 */
import type { RequestOptions } from 'node:http';
import { http } from '../io/builtins.ts';
import { InvalidArgumentError, ObdError, type Errno } from '../io/errors.ts';

/** The control API refused or failed a request; `status` is the HTTP status, errno the server's code. */
export class ControlError extends ObdError {
  override readonly errno: Errno;
  readonly status: number;
  constructor(message: string, status: number, errno: string) {
    super(message);
    this.status = status;
    this.errno = (['EIO', 'EINVAL', 'EPERM', 'ENOSPC', 'ENOTSUP', 'ENOENT', 'EOVERFLOW', 'ESHUTDOWN', 'EBUSY', 'ENOMEM'].includes(errno) ? errno : 'EIO') as Errno;
  }
}

export interface ControlTarget {
  /** A unix socket path, or http://HOST:PORT on loopback. */
  address: string;
  token?: string;
}

/** Sends one request and resolves the JSON answer; a 4xx/5xx answer rejects with ControlError. */
export function controlRequest(target: ControlTarget, method: 'GET' | 'POST', route: string, body?: unknown, timeoutMs = 0): Promise<Record<string, unknown>> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | number> = { Accept: 'application/json', Connection: 'close' };
  if (payload) Object.assign(headers, { 'Content-Type': 'application/json', 'Content-Length': payload.length });
  if (target.token) headers.Authorization = `Bearer ${target.token}`;
  let where: RequestOptions;
  if (/^https?:\/\//.test(target.address)) {
    const u = new URL(target.address);
    if (u.protocol !== 'http:') throw new InvalidArgumentError(`${target.address}: the control API speaks plain HTTP on loopback (http://127.0.0.1:PORT)`);
    where = { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 80) };
  } else where = { socketPath: target.address };
  return new Promise((resolve, reject) => {
    // One request per connection: a CLI client exits right after, and nothing lingers.
    const req = http().request({ ...where, method, path: route, headers, agent: false, timeout: timeoutMs || undefined }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let doc: Record<string, unknown>;
        try {
          doc = JSON.parse(text);
        } catch {
          reject(new ControlError(`${target.address}: answer ${res.statusCode} is not JSON: ${text.slice(0, 200)}`, res.statusCode ?? 0, 'EIO'));
          return;
        }
        const status = res.statusCode ?? 0;
        if (status >= 400) {
          const err = (doc.error ?? {}) as { message?: string; code?: string };
          reject(new ControlError(err.message ?? `HTTP ${status}`, status, err.code ?? 'EIO'));
        } else resolve(doc);
      });
    });
    req.on('timeout', () => req.destroy(new ControlError(`${target.address}: no answer within ${timeoutMs} ms`, 0, 'EIO')));
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e instanceof ControlError) reject(e);
      else reject(new ControlError(`cannot reach the control API at ${target.address}: ${e.code === 'ENOENT' ? 'no such socket (is obd serve --control running?)' : e.message}`, 0, e.code === 'ENOENT' ? 'ENOENT' : 'EIO'));
    });
    req.end(payload);
  });
}
