/**
 * The control API of `obd serve --control`: socket mode, endpoints, JSON errors for bad
 * requests (the server answers the next request), TCP only on loopback and only with the
 * bearer token, and the CLI clients' output and exit codes.
 */
import assert from 'node:assert/strict';
import { stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { controlRequest, ControlError } from '../../src/live/client.ts';
import { obd, serveJson } from '../helpers/cli.ts';
import { tempDir } from '../helpers/temp.ts';
import { baseLayer, connect, mustRead, serveLive, VSIZE } from './helpers.ts';

/** Sends raw bytes on the socket and resolves what came back before the server closed it (or 2 s). */
function rawExchange(addr: { socket: string } | { port: number }, bytes: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = 'socket' in addr ? net.connect(addr.socket) : net.connect(addr.port, '127.0.0.1');
    let got = '';
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(got);
    };
    const timer = setTimeout(done, 2000);
    s.on('data', (d) => (got += d));
    s.on('end', done);
    s.on('error', done);
    s.on('connect', () => s.write(bytes));
  });
}

async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (e) {
    if (e instanceof ControlError) return e.status;
    throw e;
  }
}

describe('control API', { timeout: 120_000 }, () => {
  it('listens on a 0600 unix socket, lists the stack and stats, and answers bad requests with JSON errors', async (t) => {
    const dir = await tempDir(t, 'obd-ctl-');
    const { layer } = await baseLayer(dir);
    const live = await serveLive(dir, [layer], ['--export', 'vm']);
    try {
      assert.equal((await stat(live.control)).mode & 0o777, 0o600);
      const target = { address: live.control };
      const c = await connect(live.socket);
      const ex = await controlRequest(target, 'GET', '/v1/exports');
      const e0 = (ex.exports as Record<string, any>[])[0]!;
      assert.equal(e0.name, 'vm');
      assert.equal(e0.live, true);
      assert.equal(e0.size, VSIZE);
      assert.equal(e0.stack.layers[0].file, layer);
      assert.equal(e0.stack.upper.data, path.join(dir, 'rw.data'));
      const st = await controlRequest(target, 'GET', '/v1/stats');
      assert.equal(st.connections, 1);

      const cases: [string, 'GET' | 'POST', string, unknown, number][] = [
        ['unknown endpoint', 'GET', '/v1/nothing', undefined, 404],
        ['wrong method', 'GET', '/v1/snapshot', undefined, 405],
        ['unknown field', 'POST', '/v1/snapshot', { commmit: 'x' }, 400],
        ['wrong type', 'POST', '/v1/snapshot', { commit: 7 }, 400],
        ['bad algorithm', 'POST', '/v1/snapshot', { commit: 'x', compress: 'gzip' }, 400],
        ['negative rate', 'POST', '/v1/snapshot', { rate: -1 }, 400],
        ['rate as text', 'POST', '/v1/snapshot', { rate: '100M' }, 400],
        ['unknown export', 'POST', '/v1/snapshot', { export: 'nope' }, 404],
        ['array body', 'POST', '/v1/resize', [1, 2], 400],
        ['bad size', 'POST', '/v1/resize', { size: -5 }, 400],
        ['unaligned size', 'POST', '/v1/resize', { size: VSIZE + 1 }, 400],
        ['bad push reference', 'POST', '/v1/snapshot', { push: 'UPPER/Case::' }, 400],
      ];
      for (const [what, method, route, body, want] of cases) {
        assert.equal(await status(controlRequest(target, method, route, body)), want, what);
      }
      const ex2 = await controlRequest(target, 'GET', '/v1/exports');
      assert.equal((ex2.exports as Record<string, any>[])[0]!.stack.layers.length, 1, 'no refused request switched anything');

      // Raw garbage: malformed HTTP, bad JSON, an oversized body, a body cut short.
      assert.match(await rawExchange({ socket: live.control }, 'NOT HTTP AT ALL\r\n\r\n'), /^HTTP\/1\.1 400/);
      const badJson = 'POST /v1/snapshot HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{bad}';
      assert.match(await rawExchange({ socket: live.control }, badJson), /^HTTP\/1\.1 400[\s\S]*not JSON/);
      const big = `POST /v1/snapshot HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${1 << 20}\r\nConnection: close\r\n\r\n`;
      assert.match(await rawExchange({ socket: live.control }, big), /^HTTP\/1\.1 413/);
      const text = 'POST /v1/snapshot HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi';
      assert.match(await rawExchange({ socket: live.control }, text), /^HTTP\/1\.1 415/);
      await rawExchange({ socket: live.control }, 'POST /v1/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"a"');

      // Compaction and resize come from the writable layer; until it has them they are 501.
      const compact = await obd(['compact', '--control', live.control, '--json']);
      if (compact.code !== 0) assert.equal(JSON.parse(compact.stdout).error.code, 'ENOTSUP');
      const shrink = await obd(['resize', '--control', live.control, '--size', '1M', '--json']);
      assert.notEqual(shrink.code, 0, 'shrinking without --shrink is refused');

      // Still serving NBD and the API after all that.
      assert.equal((await mustRead(c, 0, 4096)).length, 4096);
      const human = await obd(['snapshot', '--control', live.control]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /^snapshot: sealed layer [0-9A-F-]{36} \(writes held [\d.]+ ms\)/);
      const missing = await obd(['snapshot', '--control', path.join(dir, 'nope.sock')]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /cannot reach the control API .*no such socket/);
      c.disconnect();
    } finally {
      assert.equal(await live.serve.stop(), 0, live.serve.stderr());
    }
  });

  it('on TCP listens on loopback only and wants the bearer token', async (t) => {
    const dir = await tempDir(t, 'obd-ctl-tcp-');
    const { layer } = await baseLayer(dir);
    const tokenFile = path.join(dir, 'token');
    await writeFile(tokenFile, 's3cret-token\n', { mode: 0o600 });
    const upper = [path.join(dir, 'rw.data'), path.join(dir, 'rw.index')];
    const noToken = await obd(['serve', layer, '--writable', '--upper', ...upper, '--socket', path.join(dir, 's.sock'), '--control', '127.0.0.1:0']);
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /bearer token/);
    const wide = await obd(['serve', layer, '--writable', '--upper', ...upper, '--socket', path.join(dir, 's.sock'), '--control', '0.0.0.0:0', '--control-token', tokenFile]);
    assert.equal(wide.code, 1);
    assert.match(wide.stderr, /loopback only/);

    const serve = await serveJson([layer, '--writable', '--upper', ...upper, '--socket', path.join(dir, 's.sock'), '--control', '127.0.0.1:0', '--control-token', tokenFile]);
    try {
      const port = (serve.ready as { control?: { port: number } }).control!.port;
      const address = `http://127.0.0.1:${port}`;
      assert.equal(await status(controlRequest({ address }, 'GET', '/v1/exports')), 401);
      assert.equal(await status(controlRequest({ address, token: 's3cret-tokeX' }, 'GET', '/v1/exports')), 401);
      assert.equal(await status(controlRequest({ address, token: 's3cret-token' }, 'GET', '/v1/exports')), 200);
      const denied = await obd(['snapshot', '--control', address, '--json']);
      assert.equal(denied.code, 1);
      assert.equal(JSON.parse(denied.stdout).error.type, 'ControlError');
      const ok = await obd(['snapshot', '--control', address, '--control-token', tokenFile, '--json']);
      assert.equal(ok.code, 0, ok.stderr + ok.stdout);
      assert.match(await rawExchange({ port }, 'GET /v1/exports HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 401/);
    } finally {
      assert.equal(await serve.stop(), 0, serve.stderr());
    }
  });
});
