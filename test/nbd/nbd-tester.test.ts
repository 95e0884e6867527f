/**
 * The reference NBD test suite's client (nbd-tester-client, NetworkBlockDevice/nbd tests/run)
 * against `obd serve`: its TLS cases (integrity trace over TLS with client certificates, a
 * client certificate the server must refuse), the handshake and oversize cases, and a write
 * to a read-only export that must fail. It needs the client built once into the cache by
 * `bash scripts/nbd-tester.sh` (network, build tools); without it the suite is skipped.
 * The long cases (integrityhuge, tlshuge: 47 MiB requests, ~40 s each) run with
 * `node scripts/nbd-tester.ts`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runCase, testerBuilt, testerDir } from '../../scripts/nbd-tester.ts';

const skip = testerBuilt() ? false : `nbd-tester-client is not built in ${testerDir()} (bash scripts/nbd-tester.sh builds it)`;

describe('the reference NBD test suite against obd serve', { timeout: 180_000, skip }, () => {
  for (const name of ['tls', 'tlswrongcert', 'handshake', 'cfgsize', 'rowrite']) {
    it(name, async () => {
      const r = await runCase(name);
      assert.ok(r.ok, `${name} failed:\n${r.output}`);
    });
  }
});
