/**
 * `obd serve`'s TLS and exposure options: --tls off|on|require with X.509 (--tls-certificates
 * DIR, --tls-verify-peer) or pre-shared keys (--tls-psk FILE), as qemu-nbd and nbdkit take
 * them, and the rules for TCP: a warning when listening beyond loopback without required
 * TLS, and no writable export over TCP in the clear without --allow-insecure-writes
 * (docs/nbd.md §3).
 */
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { net } from '../io/builtins.ts';
import type { NbdTlsOptions, TlsMode } from '../nbd/tls.ts';

export interface TlsFlags {
  tls?: TlsMode;
  tlsCertificates?: string;
  tlsVerifyPeer?: boolean;
  tlsPsk?: string;
  allowInsecureWrites?: boolean;
}

export function addTlsOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--tls <mode>', 'off: no TLS; on: TLS for clients that ask (writable exports over TCP need it); require: nothing without TLS (default when credentials are given)').choices(['off', 'on', 'require']))
    .option('--tls-certificates <dir>', 'X.509 credentials: DIR/server-cert.pem, DIR/server-key.pem and, to verify clients, DIR/ca-cert.pem (the qemu-nbd/nbdkit layout)')
    .option('--tls-verify-peer', 'with --tls-certificates: only clients with a certificate signed by DIR/ca-cert.pem get in')
    .option('--tls-psk <file>', 'pre-shared keys instead of certificates: IDENTITY:HEXKEY lines, as `psktool -u NAME -p FILE` writes')
    .option('--allow-insecure-writes', 'allow a writable export over TCP to clients that did not start TLS');
}

export const TLS_EXAMPLES = `  psktool -u alice -p keys.psk && obd serve base.lsmt --listen 0.0.0.0:10809 --tls-psk keys.psk
  nbdinfo "nbds://alice@HOST:10809/?tls-psk-file=keys.psk"
  obd serve base.lsmt --listen 0.0.0.0:10809 --tls require --tls-certificates /etc/obd/pki --tls-verify-peer
  qemu-img info --object tls-creds-x509,id=t0,endpoint=client,dir=CLIENTDIR --image-opts driver=nbd,host=HOST,port=10809,tls-creds=t0`;

export interface TlsPlan {
  /** For NbdServer; undefined: no TLS. */
  tls: NbdTlsOptions | undefined;
  /** The writable main export is offered only to clients that started TLS (mode `on` over TCP). */
  writableTlsOnly: boolean;
  /** What the user is told on stderr before serving. */
  warnings: string[];
  /** For printed client URIs: `?tls-psk-file=…` and the identity to put before the host. */
  uriHint: { identity?: string; query: string } | undefined;
}

/** Checks the flags against where the server listens and what it serves; loads the credentials. */
export async function tlsPlan(flags: TlsFlags, listen: { host: string; port: number } | undefined, writable: boolean): Promise<TlsPlan> {
  if (flags.tlsCertificates && flags.tlsPsk) throw new InvalidArgumentError('give --tls-certificates or --tls-psk, not both');
  if (flags.tlsVerifyPeer && !flags.tlsCertificates) throw new InvalidArgumentError('--tls-verify-peer checks client certificates: it needs --tls-certificates DIR');
  const hasCreds = Boolean(flags.tlsCertificates || flags.tlsPsk);
  const mode: TlsMode = flags.tls ?? (hasCreds ? 'require' : 'off');
  if (mode === 'off' && hasCreds) throw new InvalidArgumentError('--tls off contradicts --tls-certificates/--tls-psk: drop one');
  if (mode !== 'off' && !hasCreds) throw new InvalidArgumentError(`--tls ${mode} needs credentials: --tls-certificates DIR or --tls-psk FILE`);

  let tls: NbdTlsOptions | undefined;
  let uriHint: TlsPlan['uriHint'];
  if (mode !== 'off') {
    // Loaded only with TLS on: node:tls and node:crypto are a good part of `obd serve`'s start-up.
    const { loadCertificates, loadPskFile } = await import('../nbd/tls.ts');
    const credentials = flags.tlsPsk ? await loadPskFile(flags.tlsPsk) : await loadCertificates(flags.tlsCertificates!, { verifyPeer: flags.tlsVerifyPeer });
    tls = { mode, credentials };
    uriHint =
      credentials.kind === 'psk'
        ? { identity: [...credentials.keys.keys()][0], query: `tls-psk-file=${path.resolve(flags.tlsPsk!)}` }
        : { query: 'tls-certificates=CLIENTDIR' };
  }

  const warnings: string[] = [];
  let writableTlsOnly = false;
  if (listen) {
    if (mode !== 'require' && !isLoopback(listen.host)) {
      warnings.push(
        mode === 'off'
          ? `listening on ${listen.host} without TLS: anyone who can reach it reads the disk in the clear (add --tls-psk FILE or --tls-certificates DIR)`
          : `listening on ${listen.host} with optional TLS (--tls on): clients that do not start TLS still read in the clear (--tls require refuses them)`,
      );
    }
    if (writable && mode !== 'require' && !flags.allowInsecureWrites) {
      if (mode === 'off') throw new InvalidArgumentError('a writable export over TCP without TLS lets anyone on the network change the disk: add --tls-psk/--tls-certificates, or --allow-insecure-writes');
      writableTlsOnly = true;
    }
  }
  return { tls, writableTlsOnly, warnings, uriHint };
}

/** Whether `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  // node:net on use: `obd --help` and `serve --help` register this module and never call it.
  if (net().isIPv4(host)) return host.startsWith('127.');
  if (net().isIPv6(host)) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

/** `nbds://HOST:PORT/NAME` → the form libnbd tools take, with the PSK identity and file or the cert dir. */
export function clientUri(uri: string, hint: TlsPlan['uriHint']): string {
  if (!hint) return uri;
  const withId = hint.identity ? uri.replace(/^(nbds(?:\+unix)?:\/\/)/, `$1${encodeURIComponent(hint.identity)}@`) : uri;
  return withId + (withId.includes('?') ? '&' : '?') + hint.query;
}
