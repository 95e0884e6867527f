/**
 * Start-up of `obd serve` for a plain-HTTP registry: the registry client and the NBD server
 * load node:tls, node:https and the `socks` library only when a request or an export needs
 * them (docs/benchmarks.md, cold open). Measured in a fresh process, which makes one request.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { promisify } from 'node:util';

const SRC = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

test('a plain-HTTP registry request and an NBD server load no TLS, HTTPS or SOCKS code', async () => {
  const server = http.createServer((_req, res) => res.writeHead(200, { 'content-length': 2 }).end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v2/`;
    const script = `
      const { Transport, readBody } = await import(${JSON.stringify(path.join(SRC, 'remote', 'http.ts'))});
      await import(${JSON.stringify(path.join(SRC, 'remote', 'registry.ts'))});
      await import(${JSON.stringify(path.join(SRC, 'image', 'open.ts'))});
      const { NbdServer } = await import(${JSON.stringify(path.join(SRC, 'nbd', 'server.ts'))});
      const { MemoryDevice } = await import(${JSON.stringify(path.join(SRC, 'io', 'memory.ts'))});
      new NbdServer({ exports: new Map([['', { device: new MemoryDevice(4096) }]]) });
      const t = new Transport();
      const res = await t.request({ method: 'GET', url: new URL(${JSON.stringify(url)}) });
      await readBody(res, 100);
      t.close();
      const { createRequire } = await import('node:module');
      const cached = Object.keys(createRequire(import.meta.url).cache);
      console.log(JSON.stringify([...process.moduleLoadList.filter((m) => /\\b(tls|https)\\b/.test(m)), ...cached.filter((f) => /node_modules\\/socks\\//.test(f))]));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd: SRC });
    assert.deepEqual(JSON.parse(stdout), []);
  } finally {
    server.close();
  }
});
