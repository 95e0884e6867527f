/**
 * TLS material for tests, made by the GnuTLS tools the peers use: a CA, a server certificate
 * for localhost/127.0.0.1 and a client certificate signed by it, a second self-signed client
 * nobody trusts, and a psktool key file. Directories follow the qemu/nbdkit/libnbd layout
 * (ca-cert.pem + server-cert.pem/server-key.pem, or client-cert.pem/client-key.pem).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { missing, must } from './run.ts';

export interface Pki {
  /** ca-cert.pem, server-cert.pem, server-key.pem: for the server. */
  server: string;
  /** ca-cert.pem, client-cert.pem, client-key.pem: a client the CA signed. */
  client: string;
  /** The same layout with a self-signed client certificate. */
  stranger: string;
  /** psktool file with identity "alice". */
  psk: string;
  /** The same identity with another key. */
  wrongPsk: string;
}

export const tlsToolsMissing = (): string[] => missing('certtool', 'psktool');

async function template(dir: string, name: string, lines: string[]): Promise<string> {
  const f = path.join(dir, `${name}.info`);
  await writeFile(f, lines.join('\n') + '\n');
  return f;
}

async function key(file: string): Promise<void> {
  await must('certtool', ['--generate-privkey', '--key-type=ecdsa', '--curve=secp256r1', '--outfile', file]);
}

/** Makes the whole set under `dir` (about 0.2 s). */
export async function makePki(dir: string): Promise<Pki> {
  const work = path.join(dir, 'work');
  const server = path.join(dir, 'server');
  const client = path.join(dir, 'client');
  const stranger = path.join(dir, 'stranger');
  for (const d of [work, server, client, stranger]) await mkdir(d, { recursive: true });
  const caKey = path.join(work, 'ca-key.pem');
  const caCert = path.join(work, 'ca-cert.pem');
  await key(caKey);
  await must('certtool', ['--generate-self-signed', '--load-privkey', caKey, '--template', await template(work, 'ca', ['cn = obd test CA', 'ca', 'cert_signing_key', 'expiration_days = 30']), '--outfile', caCert]);
  const ca = await readFile(caCert);
  const leaf = async (out: string, role: 'server' | 'client', signed: boolean) => {
    const k = path.join(out, `${role}-key.pem`);
    await key(k);
    const t = await template(work, `${path.basename(out)}-${role}`, [
      `cn = ${role === 'server' ? 'localhost' : `obd test ${path.basename(out)}`}`,
      ...(role === 'server' ? ['dns_name = localhost', 'ip_address = 127.0.0.1', 'tls_www_server'] : ['tls_www_client']),
      'signing_key',
      'encryption_key',
      'expiration_days = 30',
    ]);
    const cert = path.join(out, `${role}-cert.pem`);
    if (signed) await must('certtool', ['--generate-certificate', '--load-privkey', k, '--load-ca-certificate', caCert, '--load-ca-privkey', caKey, '--template', t, '--outfile', cert]);
    else await must('certtool', ['--generate-self-signed', '--load-privkey', k, '--template', t, '--outfile', cert]);
    await writeFile(path.join(out, 'ca-cert.pem'), ca);
  };
  await leaf(server, 'server', true);
  await leaf(client, 'client', true);
  await leaf(stranger, 'client', false);
  const psk = path.join(dir, 'keys.psk');
  const wrongPsk = path.join(dir, 'wrong.psk');
  await must('psktool', ['-u', 'alice', '-p', psk]);
  await must('psktool', ['-u', 'alice', '-p', wrongPsk]);
  return { server, client, stranger, psk, wrongPsk };
}
