/**
 * TLS for NBD (STARTTLS, NBD proto.md "TLS support"): the credentials a server offers and the
 * upgrade of one plaintext connection to TLS. Credentials are either X.509 — a directory laid
 * out as qemu-nbd and nbdkit expect it (ca-cert.pem, server-cert.pem, server-key.pem) — or
 * pre-shared keys in psktool's `identity:hexkey` lines. One secure context is built when the
 * server starts and shared by every connection. Modes and what clients meet: docs/nbd.md §1, §2.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import path from 'node:path';
import type * as tls from 'node:tls';
import { tls as tlsLib } from '../io/builtins.ts';
import { ObdError, type Errno } from '../io/errors.ts';
import { NbdDisconnect } from './errors.ts';

/** off: no TLS (NOTLS); on: TLS if the client asks (SELECTIVETLS); require: nothing without it (FORCEDTLS). */
export type TlsMode = 'off' | 'on' | 'require';

export type NbdTlsCredentials =
  | { kind: 'x509'; cert: Buffer; key: Buffer; ca?: Buffer; verifyPeer: boolean; source: string }
  | { kind: 'psk'; keys: ReadonlyMap<string, Buffer>; source: string };

export interface NbdTlsOptions {
  mode: 'on' | 'require';
  credentials: NbdTlsCredentials;
}

/** TLS credentials that cannot be loaded or used (missing file, bad PEM, malformed key line). */
export class NbdTlsError extends ObdError {
  override readonly errno: Errno = 'EINVAL';
}

/**
 * TLS 1.3 suites, AES-128-GCM first: PSKs found by the server callback only work with SHA-256
 * suites, and AES-GCM is the cheapest where the CPU has AES instructions. The TLS 1.2 PSK
 * suites are for clients that do not speak 1.3 (GnuTLS with -VERS-TLS1.3).
 */
const TLS13 = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';
const PSK12 = 'ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES128-CBC-SHA256:PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384';
const X509_12 = 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305';

/** X.509 credentials from DIR/server-cert.pem, DIR/server-key.pem and (needed to verify clients) DIR/ca-cert.pem. */
export async function loadCertificates(dir: string, opts: { verifyPeer?: boolean } = {}): Promise<NbdTlsCredentials> {
  const file = (name: string) => path.join(dir, name);
  const need = async (name: string): Promise<Buffer> => {
    try {
      return await readFile(file(name));
    } catch (e) {
      throw new NbdTlsError(`${file(name)}: cannot read the ${name.replace('.pem', '').replace('-', ' ')} (${(e as NodeJS.ErrnoException).code ?? String(e)}); --tls-certificates DIR holds ca-cert.pem, server-cert.pem and server-key.pem`, { cause: e });
    }
  };
  const cert = await need('server-cert.pem');
  const key = await need('server-key.pem');
  const ca = opts.verifyPeer ? await need('ca-cert.pem') : await readFile(file('ca-cert.pem')).catch(() => undefined);
  const creds: NbdTlsCredentials = { kind: 'x509', cert, key, ca, verifyPeer: Boolean(opts.verifyPeer), source: dir };
  secureContext(creds);
  return creds;
}

/** Pre-shared keys from a psktool file: one `identity:hexkey` per line. */
export async function loadPskFile(file: string): Promise<NbdTlsCredentials> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new NbdTlsError(`${file}: cannot read the PSK file (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { cause: e });
  }
  return { kind: 'psk', keys: parsePskKeys(text, file), source: file };
}

export function parsePskKeys(text: string, file: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const lines = text.split('\n');
  for (const [i, raw] of lines.entries()) {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') continue;
    const where = `${file}:${i + 1}`;
    const colon = line.lastIndexOf(':');
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0) throw new NbdTlsError(`${where}: expected IDENTITY:HEXKEY (as psktool writes), got no identity`);
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new NbdTlsError(`${where}: the key of "${identity}" is not an even number of hex digits`);
    if (keys.has(identity)) throw new NbdTlsError(`${where}: identity "${identity}" is given twice`);
    keys.set(identity, Buffer.from(hex, 'hex'));
  }
  if (keys.size === 0) throw new NbdTlsError(`${file}: no keys (expected IDENTITY:HEXKEY lines, as psktool writes)`);
  return keys;
}

/** The shared context; throws NbdTlsError for a certificate or key OpenSSL refuses. */
export function secureContext(creds: NbdTlsCredentials): tls.SecureContext {
  try {
    if (creds.kind === 'psk') return tlsLib().createSecureContext({ minVersion: 'TLSv1.2', ciphers: `${TLS13}:${PSK12}`, honorCipherOrder: true });
    return tlsLib().createSecureContext({ minVersion: 'TLSv1.2', ciphers: `${TLS13}:${X509_12}`, honorCipherOrder: true, cert: creds.cert, key: creds.key, ca: creds.ca });
  } catch (e) {
    throw new NbdTlsError(`${creds.source}: unusable TLS credentials: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

/** What a connection needs to upgrade itself: the shared context and how peers are checked. */
export class NbdTls {
  readonly mode: 'on' | 'require';
  readonly credentials: NbdTlsCredentials;
  readonly #context: tls.SecureContext;
  /** The CAs client certificates must chain to (with verifyPeer). */
  readonly #trusted: X509Certificate[] = [];

  constructor(opts: NbdTlsOptions) {
    this.mode = opts.mode;
    this.credentials = opts.credentials;
    this.#context = secureContext(opts.credentials);
    const c = opts.credentials;
    if (c.kind === 'x509' && c.verifyPeer) {
      if (!c.ca) throw new NbdTlsError(`${c.source}: verifying clients needs ca-cert.pem`);
      this.#trusted = pemBlocks(c.ca).map((pem) => new X509Certificate(pem));
    }
  }

  /**
   * Starts the server side of a TLS handshake on `raw` (paused, nothing of it consumed past
   * the STARTTLS option) and returns the secure socket at once, so the caller can listen to
   * it; `secured` resolves with a description of the peer once the handshake is done, or
   * rejects with NbdDisconnect: failed handshake, a client certificate that does not verify,
   * an unknown PSK identity. The raw socket belongs to the TLS socket from then on.
   */
  wrap(raw: Socket): { socket: tls.TLSSocket; secured: Promise<string> } {
    const creds = this.credentials;
    const verify = creds.kind === 'x509' && creds.verifyPeer;
    let identity: string | undefined;
    const socket = new (tlsLib().TLSSocket)(raw, {
      isServer: true,
      secureContext: this.#context,
      requestCert: verify,
      rejectUnauthorized: verify,
      ...(creds.kind === 'psk'
        ? {
            pskCallback: (_s: tls.TLSSocket, id: string) => {
              identity = id;
              return creds.keys.get(id) ?? null;
            },
          }
        : {}),
    });
    const secured = new Promise<string>((resolve, reject) => {
      const fail = (why: string) => {
        socket.off('error', onError);
        socket.off('close', onClose);
        socket.destroy();
        reject(new NbdDisconnect(`TLS handshake failed: ${why}`));
      };
      const onError = (e: Error & { reason?: string }) =>
        fail(creds.kind === 'psk' && identity !== undefined && !creds.keys.has(identity) ? `unknown PSK identity "${identity}"` : (e.reason ?? e.message));
      const onClose = () => fail('the client closed the connection');
      socket.once('error', onError);
      socket.once('close', onClose);
      socket.once('secure', () => {
        socket.off('error', onError);
        socket.off('close', onClose);
        if (verify) {
          const why = untrusted(socket, this.#trusted);
          if (why) return fail(`client certificate not accepted: ${why}`);
        }
        const who = creds.kind === 'psk' ? `PSK identity "${identity ?? ''}"` : verify ? `client certificate "${subjectOf(socket)}"` : 'X.509';
        resolve(`${socket.getProtocol() ?? 'TLS'} ${socket.getCipher().name}, ${who}`);
      });
    });
    return { socket, secured };
  }
}

/**
 * Why the client's certificate chain does not lead to a trusted CA (undefined: it does).
 * A TLSSocket made outside a tls.Server does not compute `authorized`, so the chain is
 * checked here: each certificate valid now and signed by the next, the last one signed by a
 * CA of ca-cert.pem. OpenSSL has already checked that the client holds the leaf's key.
 */
function untrusted(socket: tls.TLSSocket, trusted: X509Certificate[]): string | undefined {
  const leaf = socket.getPeerX509Certificate();
  if (!leaf) return 'none sent';
  const chain: X509Certificate[] = [leaf];
  // The intermediates the client sent, in the order OpenSSL linked them.
  for (let c = socket.getPeerCertificate(true); c.issuerCertificate && c.issuerCertificate !== c && chain.length < 8; c = c.issuerCertificate) {
    chain.push(new X509Certificate(c.issuerCertificate.raw));
  }
  const now = Date.now();
  for (const [i, cert] of chain.entries()) {
    if (now < cert.validFromDate.getTime() || now > cert.validToDate.getTime()) return `"${cert.subject.trim()}" is not valid now (${cert.validFrom} – ${cert.validTo})`;
    const ca = trusted.find((t) => cert.checkIssued(t) && cert.verify(t.publicKey));
    if (ca) return now < ca.validFromDate.getTime() || now > ca.validToDate.getTime() ? `CA "${ca.subject.trim()}" is not valid now` : undefined;
    const next = chain[i + 1];
    if (!next || !next.ca || !cert.checkIssued(next) || !cert.verify(next.publicKey)) break;
  }
  return `"${leaf.subject.trim()}" (issuer "${leaf.issuer.trim()}") is not signed by a CA of ca-cert.pem`;
}

function pemBlocks(pem: Buffer): string[] {
  return pem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
}

function subjectOf(socket: tls.TLSSocket): string {
  const cn = socket.getPeerCertificate()?.subject?.CN;
  return Array.isArray(cn) ? cn.join(',') : (cn ?? '?');
}
