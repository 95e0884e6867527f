/**
 * NBD over TLS: real GnuTLS clients (nbdinfo, nbdcopy, qemu-img, qemu-io) with pre-shared
 * keys and with certificates, on TCP and on a unix socket; the STARTTLS rules of the protocol
 * through the raw client; and `obd serve`'s exposure rules.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { openImage } from '../../src/image/open.ts';
import { MemoryDevice } from '../../src/io/memory.ts';
import type { BlockDevice } from '../../src/io/types.ts';
import { NbdClient, NbdClientError, NbdServer, loadCertificates, loadPskFile, parsePskKeys, NbdTlsError, type NbdEvent, type NbdTlsCredentials } from '../../src/nbd/index.ts';
import { isLoopback, tlsPlan } from '../../src/cli/nbd-tls.ts';
import { obd, serveJson } from '../helpers/cli.ts';
import { FIXTURES } from '../helpers/recipes.ts';
import { suiteTempDir } from '../helpers/temp.ts';
import { IHAVEOPT, OPT, RawClient, REP, TF, infoRequest, metaRequest } from './helpers/client.ts';
import { missing, must, run, sha256File } from './helpers/run.ts';
import { makePki, tlsToolsMissing, type Pki } from './helpers/tls.ts';

const MiB = 1 << 20;
const STACK = ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map((f) => path.join(FIXTURES, 'lsmt', f));
const STACK_SHA = '2e934e7aadac27b164b562713673cdd0fd295e063f4edc6cf6fde77a54dcc967';
const absent = [...missing('qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy'), ...tlsToolsMissing()];

interface Listening {
  server: NbdServer;
  tcp: { host: string; port: number };
  events: NbdEvent[];
}

async function listen(exports: ConstructorParameters<typeof NbdServer>[0]['exports'], mode: 'on' | 'require', credentials: NbdTlsCredentials, socket?: string): Promise<Listening> {
  const events: NbdEvent[] = [];
  const server = new NbdServer({ exports, tls: { mode, credentials }, onEvent: (e) => events.push(e) });
  const addr = await server.listen(socket ? { socket } : { host: '127.0.0.1', port: 0 });
  return { server, tcp: addr as { host: string; port: number }, events };
}

describe('nbd over TLS', { timeout: 120_000, skip: absent.length ? `tools missing: ${absent.join(', ')} (scripts/setup-peers.sh installs them)` : false }, () => {
  const tmp = suiteTempDir('obd-tls-');
  let pki: Pki;
  let stack: BlockDevice;
  let ram: MemoryDevice;
  let pskKey: Buffer;
  before(async () => {
    pki = await makePki(tmp.path);
    stack = await openImage(STACK);
    ram = new MemoryDevice(8 * MiB, 'ram');
    pskKey = parsePskKeys(await readFile(pki.psk, 'utf8'), pki.psk).get('alice')!;
  });
  after(() => stack.close());

  const pskClient = (key = pskKey, identity = 'alice'): tls.ConnectionOptions => ({
    pskCallback: () => ({ identity, psk: key }),
    checkServerIdentity: () => undefined,
  });

  describe('pre-shared keys, required', () => {
    let tcp: Listening;
    let unix: Listening;
    let sock: string;
    before(async () => {
      const creds = await loadPskFile(pki.psk);
      tcp = await listen({ stack, ram }, 'require', creds);
      sock = path.join(tmp.path, 'psk.sock');
      unix = await listen({ stack, ram }, 'require', creds, sock);
    });
    after(async () => {
      await tcp.server.close();
      await unix.server.close();
    });

    it('nbdinfo, nbdcopy and qemu-img read the stack exactly over nbds:// and nbds+unix://', async () => {
      const uris = [`nbds://alice@127.0.0.1:${tcp.tcp.port}/stack?tls-psk-file=${pki.psk}`, `nbds+unix://alice@/stack?socket=${sock}&tls-psk-file=${pki.psk}`];
      for (const uri of uris) {
        const info = JSON.parse(await must('nbdinfo', ['--json', uri]));
        assert.equal(info.TLS, true, uri);
        assert.equal(info.exports[0]['export-size'], 64 * MiB);
        const out = path.join(tmp.path, 'copy.raw');
        await must('nbdcopy', ['-C', '2', uri, out]);
        assert.equal(await sha256File(out), STACK_SHA, `nbdcopy ${uri}`);
      }
      const creds = `tls-creds-psk,id=t0,endpoint=client,dir=${path.dirname(pki.psk)},username=alice`;
      for (const where of [`host=127.0.0.1,port=${tcp.tcp.port}`, `path=${sock}`]) {
        const out = path.join(tmp.path, 'qemu.raw');
        await must('qemu-img', ['convert', '--object', creds, '--image-opts', `driver=nbd,${where},export=stack,tls-creds=t0`, '-O', 'raw', out]);
        assert.equal(await sha256File(out), STACK_SHA, `qemu-img ${where}`);
      }
    });

    it('qemu-io writes and reads back a writable export over TLS', async () => {
      const args = ['--object', `tls-creds-psk,id=t0,endpoint=client,dir=${path.dirname(pki.psk)},username=alice`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${tcp.tcp.port},export=ram,tls-creds=t0`];
      const w = await run('qemu-io', [...args, '-c', 'write -P 0x5c 1M 512k', '-c', 'read -P 0x5c 1M 512k']);
      assert.equal(w.code, 0, w.stdout + w.stderr);
      assert.doesNotMatch(w.stdout, /verification failed|error/i);
      assert.ok(ram.bytes.subarray(MiB, MiB + 512 * 1024).every((b) => b === 0x5c));
    });

    it('a wrong key, an unknown identity and a plaintext client get nothing; others go on', async () => {
      const base = `nbds://alice@127.0.0.1:${tcp.tcp.port}/stack`;
      const wrong = await run('nbdinfo', [`${base}?tls-psk-file=${pki.wrongPsk}`]);
      assert.notEqual(wrong.code, 0);
      const stranger = await run('nbdinfo', [`nbds://mallory@127.0.0.1:${tcp.tcp.port}/stack?tls-psk-file=${pki.psk}`]);
      assert.notEqual(stranger.code, 0);
      const plain = await run('nbdinfo', ['--list', `nbd://127.0.0.1:${tcp.tcp.port}`]);
      assert.notEqual(plain.code, 0);
      assert.doesNotMatch(plain.stdout, /stack|ram/, 'no export names leak before TLS');
      const ok = JSON.parse(await must('nbdinfo', ['--json', `${base}?tls-psk-file=${pki.psk}`]));
      assert.equal(ok.exports[0]['export-size'], 64 * MiB);
    });

    it('our client reads over nbds:// and nbds+unix:// with tls-psk-file; a wrong key or a server without TLS is a typed error', async () => {
      const whole = Buffer.alloc(stack.size);
      await stack.read(whole, 0);
      for (const uri of [`nbds://alice@127.0.0.1:${tcp.tcp.port}/stack?tls-psk-file=${pki.psk}`, `nbds+unix://alice@/stack?socket=${sock}&tls-psk-file=${pki.psk}`]) {
        const c = await NbdClient.connect(uri);
        try {
          const got = Buffer.alloc(stack.size);
          await c.read(got, 0);
          assert.ok(got.equals(whole), uri);
        } finally {
          await c.close();
        }
      }
      await assert.rejects(NbdClient.connect(`nbds://alice@127.0.0.1:${tcp.tcp.port}/stack?tls-psk-file=${pki.wrongPsk}`), (e: unknown) => e instanceof NbdClientError && /TLS handshake failed/.test(e.message));
      await assert.rejects(NbdClient.connect(`nbds://bob@127.0.0.1:${tcp.tcp.port}/stack?tls-psk-file=${pki.psk}`), /no key for identity "bob"/);
      const plain = new NbdServer({ exports: { stack } });
      const addr = (await plain.listen({ host: '127.0.0.1', port: 0 })) as { port: number };
      try {
        await assert.rejects(NbdClient.connect(`nbds://alice@127.0.0.1:${addr.port}/stack?tls-psk-file=${pki.psk}`), /refused TLS/);
      } finally {
        await plain.close();
      }
    });

    it('our client reads from qemu-nbd over TLS-PSK', async () => {
      const raw = path.join(tmp.path, 'qsrc.raw');
      const whole = Buffer.alloc(stack.size);
      await stack.read(whole, 0);
      await writeFile(raw, whole);
      const qsock = path.join(tmp.path, 'qemu.sock');
      const child = spawn('qemu-nbd', ['--object', `tls-creds-psk,id=t0,endpoint=server,dir=${path.dirname(pki.psk)}`, '--tls-creds', 't0', '-r', '-f', 'raw', '-k', qsock, raw], { stdio: 'ignore' });
      const exited = new Promise((r) => child.once('exit', r));
      try {
        // The socket file exists a moment before qemu-nbd listens on it: a refused connect is retried.
        let c: NbdClient | undefined;
        for (let i = 0; !c; i++) {
          if (!existsSync(qsock)) {
            assert.ok(i < 200, 'qemu-nbd made no socket in 10 s');
            await new Promise((r) => setTimeout(r, 50));
            continue;
          }
          c = await NbdClient.connect(`nbds+unix://alice@/?socket=${qsock}&tls-psk-file=${pki.psk}`).catch(async (e: Error) => {
            if ((e.cause as NodeJS.ErrnoException | undefined)?.code !== 'ECONNREFUSED' || i >= 200) throw e;
            await new Promise((r) => setTimeout(r, 50));
            return undefined;
          });
        }
        const got = Buffer.alloc(c.size);
        await c.read(got, 0);
        await c.close();
        assert.ok(got.equals(whole));
      } finally {
        // qemu-nbd may be gone already (it exits after its one client); if SIGTERM does not end it, SIGKILL does.
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const hard = setTimeout(() => child.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(hard);
        }
      }
    });

    it('before STARTTLS every option but ABORT is refused with TLS_REQD; EXPORT_NAME ends the session', async () => {
      const c = await RawClient.connect(tcp.tcp);
      await c.greeting();
      c.sendClientFlags(1);
      const asks: [number, Buffer?][] = [[OPT.LIST], [OPT.INFO, infoRequest('stack')], [OPT.GO, infoRequest('stack')], [OPT.STRUCTURED_REPLY], [OPT.LIST_META, metaRequest('stack', [])], [99]];
      for (const [opt, data] of asks) {
        const r = await c.option(opt, data);
        assert.deepEqual(r.map((x) => x.type), [REP.ERR_TLS_REQD], `option ${opt}`);
      }
      c.sendOption(OPT.EXPORT_NAME, Buffer.from('stack'));
      assert.ok(await c.closedByServer());
      const a = await RawClient.connect(tcp.tcp);
      await a.greeting();
      a.sendClientFlags(1);
      assert.equal((await a.option(OPT.ABORT))[0]!.type, REP.ACK);
      a.close();
    });

    it('STARTTLS: data with it is invalid, bytes behind it end the session, a second one is invalid, earlier options are forgotten', async () => {
      const c = await RawClient.connect(tcp.tcp);
      await c.greeting();
      c.sendClientFlags(1);
      assert.equal((await c.option(OPT.STARTTLS, Buffer.from([1])))[0]!.type, REP.ERR_INVALID);
      // What a man in the middle would inject behind the STARTTLS: never read as plaintext.
      const h = Buffer.alloc(16);
      h.writeBigUInt64BE(IHAVEOPT, 0);
      h.writeUInt32BE(OPT.STARTTLS, 8);
      c.send(Buffer.concat([h, h.subarray(0, 12), Buffer.alloc(4)]));
      assert.ok(await c.closedByServer());
      assert.ok(tcp.events.some((e) => e.type === 'protocol-error' && /16 bytes sent after NBD_OPT_STARTTLS/.test(e.message)));

      const s = await RawClient.connect(tcp.tcp);
      await s.greeting();
      s.sendClientFlags(1);
      assert.equal((await s.startTls(pskClient())).type, REP.ACK);
      assert.equal((await s.option(OPT.STARTTLS))[0]!.type, REP.ERR_INVALID);
      // Structured replies negotiated over TLS, then checked to be in force.
      await s.handshake({ name: 'stack', structured: true, skipGreeting: true });
      const r = await s.read(0, 4096);
      assert.equal(r.error, 0);
      assert.equal(r.chunks.length, 1, 'structured reply');
      s.close();
    });
  });

  it('a client that stalls in the TLS handshake is dropped by the handshake time limit', async () => {
    const events: NbdEvent[] = [];
    const server = new NbdServer({ exports: { stack }, tls: { mode: 'require', credentials: await loadPskFile(pki.psk) }, handshakeTimeoutMs: 300, onEvent: (e) => events.push(e) });
    const addr = (await server.listen({ host: '127.0.0.1', port: 0 })) as { host: string; port: number };
    try {
      const c = await RawClient.connect(addr);
      await c.greeting();
      c.sendClientFlags(1);
      c.sendOption(OPT.STARTTLS);
      assert.equal((await c.optionReply()).type, REP.ACK);
      // No ClientHello follows.
      assert.ok(await c.closedByServer());
      assert.ok(events.some((e) => e.type === 'protocol-error' && /handshake timed out/.test(e.message)));
      for (let i = 0; i < 50 && server.connectionCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(server.connectionCount, 0, 'the connection is gone');
    } finally {
      await server.close();
    }
  });

  describe('certificates', () => {
    let srv: Listening;
    before(async () => {
      srv = await listen({ stack }, 'require', await loadCertificates(pki.server, { verifyPeer: true }));
    });
    after(() => srv.server.close());

    it('clients with a certificate the CA signed read the stack; others are turned away', async () => {
      const uri = (dir: string) => `nbds://127.0.0.1:${srv.tcp.port}/stack?tls-certificates=${dir}`;
      const out = path.join(tmp.path, 'x509.raw');
      await must('nbdcopy', [uri(pki.client), out]);
      assert.equal(await sha256File(out), STACK_SHA);
      const q = JSON.parse(await must('qemu-img', ['info', '--output=json', '--object', `tls-creds-x509,id=t0,endpoint=client,dir=${pki.client}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${srv.tcp.port},export=stack,tls-creds=t0`]));
      assert.equal(q['virtual-size'], 64 * MiB);
      assert.notEqual((await run('nbdinfo', [uri(pki.stranger)])).code, 0, 'self-signed client');
      const noCert = path.join(tmp.path, 'nocert');
      await must('sh', ['-c', `mkdir -p ${noCert} && cp ${pki.client}/ca-cert.pem ${noCert}/`]);
      assert.notEqual((await run('nbdinfo', [uri(noCert)])).code, 0, 'no client certificate');
    });

    it('our client presents its certificate and checks the server one', async () => {
      const c = await NbdClient.connect(`nbds://127.0.0.1:${srv.tcp.port}/stack?tls-certificates=${pki.client}`);
      assert.equal(c.size, 64 * MiB);
      await c.close();
      // TLS 1.3: the client is done before the server has judged its certificate, then gets hung up on.
      await assert.rejects(NbdClient.connect(`nbds://127.0.0.1:${srv.tcp.port}/stack?tls-certificates=${pki.stranger}`), /TLS handshake failed|closed by the server/);
      await assert.rejects(NbdClient.connect(`nbds://127.0.0.1:${srv.tcp.port}/stack?tls-certificates=${pki.client}&tls-hostname=example.org`), /TLS handshake failed.*example\.org/);
    });

    it('a client that does not trust the server certificate gives up', async () => {
      const r = await run('nbdinfo', [`nbds://127.0.0.1:${srv.tcp.port}/stack?tls-certificates=${pki.stranger}`]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /certificate|TLS|alert/i);
    });

    it('unreadable or mismatched credentials are typed errors naming the file', async () => {
      await assert.rejects(loadCertificates(tmp.path), (e: unknown) => e instanceof NbdTlsError && /server-cert\.pem/.test(e.message));
      await assert.rejects(loadCertificates(pki.client, { verifyPeer: true }), NbdTlsError);
      assert.throws(() => parsePskKeys('alice:abc\n', 'k.psk'), /k\.psk:1: .*hex/);
      assert.throws(() => parsePskKeys('a:00\na:11\n', 'k.psk'), /k\.psk:2: .*twice/);
      assert.throws(() => parsePskKeys('\n', 'k.psk'), /no keys/);
    });
  });

  describe('optional TLS', () => {
    let srv: Listening;
    before(async () => {
      srv = await listen({ stack, ram: { device: ram, tlsOnly: true } }, 'on', await loadPskFile(pki.psk));
    });
    after(() => srv.server.close());

    it('plaintext clients see and use only the exports that do not need TLS', async () => {
      const list = JSON.parse(await must('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${srv.tcp.port}`]));
      assert.deepEqual(list.exports.map((e: { 'export-name': string }) => e['export-name']), ['stack']);
      const c = await RawClient.connect(srv.tcp);
      await c.greeting();
      c.sendClientFlags(1);
      assert.equal((await c.option(OPT.GO, infoRequest('ram'))).at(-1)!.type, REP.ERR_TLS_REQD);
      assert.equal((await c.option(OPT.STRUCTURED_REPLY)).at(-1)!.type, REP.ACK);
      assert.equal((await c.option(OPT.SET_META, metaRequest('ram', ['base:allocation']))).at(-1)!.type, REP.ERR_UNKNOWN, 'a TLS-only export is not there yet');
      assert.equal((await c.startTls(pskClient())).type, REP.ACK);
      // Structured replies asked for in the clear do not survive STARTTLS.
      await c.handshake({ name: 'ram', skipGreeting: true });
      assert.equal(c.flags & TF.SEND_DF, 0, 'no DF: structured replies were forgotten');
      const r = await c.read(0, 4096);
      assert.equal(r.error, 0);
      assert.equal(r.chunks.length, 0, 'a simple reply');
      assert.ok(r.data!.equals(ram.bytes.subarray(0, 4096)));
      c.close();
      const tlsList = JSON.parse(await must('nbdinfo', ['--list', '--json', `nbds://alice@127.0.0.1:${srv.tcp.port}/?tls-psk-file=${pki.psk}`]));
      assert.deepEqual(tlsList.exports.map((e: { 'export-name': string }) => e['export-name']).sort(), ['ram', 'stack']);
    });
  });

  describe('obd serve', () => {
    it('refuses a writable export over TCP in the clear, warns beyond loopback, makes it TLS-only with --tls on', async () => {
      const r = await obd(['serve', ...STACK, '--writable', '--upper', path.join(tmp.path, 'u.data'), path.join(tmp.path, 'u.index'), '--listen', '127.0.0.1:0']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /writable export over TCP without TLS.*--allow-insecure-writes/);
      const open = await tlsPlan({}, { host: '0.0.0.0', port: 1 }, false);
      assert.match(open.warnings.join(), /0\.0\.0\.0 without TLS/);
      assert.deepEqual((await tlsPlan({}, { host: '127.0.0.1', port: 1 }, false)).warnings, []);
      const on = await tlsPlan({ tls: 'on', tlsPsk: pki.psk }, { host: '10.0.0.1', port: 1 }, true);
      assert.equal(on.writableTlsOnly, true);
      assert.match(on.warnings.join(), /optional TLS/);
      const req = await tlsPlan({ tlsPsk: pki.psk }, { host: '10.0.0.1', port: 1 }, true);
      assert.equal(req.tls?.mode, 'require');
      assert.deepEqual([req.writableTlsOnly, req.warnings], [false, []]);
      assert.equal((await tlsPlan({ allowInsecureWrites: true }, { host: '127.0.0.1', port: 1 }, true)).tls, undefined);
      assert.deepEqual((await tlsPlan({}, undefined, true)).warnings, [], 'a unix socket needs nothing');
      await assert.rejects(tlsPlan({ tls: 'require' }, undefined, false), /needs credentials/);
      await assert.rejects(tlsPlan({ tlsPsk: pki.psk, tlsCertificates: pki.server }, undefined, false), /not both/);
      assert.deepEqual(['127.0.0.1', '127.3.4.5', '::1', 'localhost', '0.0.0.0', '::', '10.1.2.3'].map(isLoopback), [true, true, true, true, false, false, false]);
    });

    it('serves over nbds:// with --tls-psk and prints URIs libnbd tools take as they are', async () => {
      const s = await serveJson([...STACK, '--listen', '127.0.0.1:0', '--tls-psk', pki.psk]);
      try {
        const uri = s.ready.exports[0]!.uri;
        assert.match(uri, /^nbds:\/\/alice@127\.0\.0\.1:\d+\/\?tls-psk-file=/);
        const out = path.join(tmp.path, 'cli.raw');
        await must('nbdcopy', [uri, out]);
        assert.equal(await sha256File(out), STACK_SHA);
      } finally {
        assert.equal(await s.stop(), 0);
      }
    });
  });
});
