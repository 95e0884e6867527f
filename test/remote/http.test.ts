/** The HTTP layer's ranged GET with retries, used by a backend that is not the registry client. */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ProtocolError, ServerError } from '../../src/remote/errors.ts';
import { rangeHeader, takeRange, Transport, withRetries } from '../../src/remote/http.ts';

const BLOB = Buffer.from(Array.from({ length: 4096 }, (_, i) => i & 0xff));

describe('ranged GET with retries in the HTTP layer', () => {
  let server: http.Server;
  let base: string;
  let failuresLeft = 0;
  let lie = false;
  before(async () => {
    server = http.createServer((req, res) => {
      if (failuresLeft > 0) {
        failuresLeft--;
        res.writeHead(503).end();
        return;
      }
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '')!;
      const [s, e] = [Number(m[1]), Number(m[2])];
      const start = lie ? s + 1 : s;
      res.writeHead(206, { 'content-range': `bytes ${start}-${e}/${BLOB.length}`, 'content-length': e - start + 1 });
      res.end(BLOB.subarray(start, e + 1));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/blob`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  const get = async (t: Transport, buf: Uint8Array, offset: number): Promise<void> => {
    await withRetries(
      async () => {
        const res = await t.request({ method: 'GET', url: new URL(base), headers: { range: rangeHeader(offset, buf.length) } });
        if (res.status >= 500) {
          res.stream.resume();
          throw new ServerError(base, `answered ${res.status}`, res.status);
        }
        assert.equal(await takeRange(res, buf, offset, BLOB.length), true);
      },
      { retries: 3, retryBaseMs: 1 },
    );
  };

  it('retries a failing server and takes only the exact range asked', async () => {
    const t = new Transport({ idleTimeoutMs: 2000 });
    failuresLeft = 2;
    const buf = new Uint8Array(100);
    await get(t, buf, 1000);
    assert.deepEqual(Buffer.from(buf), BLOB.subarray(1000, 1100));
    lie = true;
    await assert.rejects(get(t, buf, 1000), ProtocolError);
    lie = false;
    failuresLeft = 10;
    await assert.rejects(get(t, buf, 0), ServerError, 'gives up after the retries');
    failuresLeft = 0;
    await t.close?.();
  });
});

describe('withRetries and an abort signal', () => {
  it('stops retrying once aborted: the signal reason ends a backoff wait at once', async () => {
    const ac = new AbortController();
    const why = new Error('cancelled');
    let attempts = 0;
    const failing = () => {
      attempts++;
      return Promise.reject(new ServerError('http://x/', 'answered 503', 503));
    };
    setTimeout(() => ac.abort(why), 50);
    const t0 = performance.now();
    // Backoff of 10 s per retry: without the signal this would run for a minute.
    await assert.rejects(withRetries(failing, { retries: 5, retryBaseMs: 10_000, signal: ac.signal }), (e) => e === why);
    assert.ok(performance.now() - t0 < 2000);
    assert.equal(attempts, 1);
    await assert.rejects(withRetries(failing, { retries: 5, signal: ac.signal }), (e) => e === why, 'an aborted signal makes no second attempt');
    assert.equal(attempts, 2);
  });
});
