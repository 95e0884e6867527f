/**
 * SIGKILL of `obd serve --control` at random moments while a client writes and flushes and
 * snapshots (seal, commit, compress, push) run back to back: after each restart every write
 * acknowledged by a flush before the kill reads back, and the record opens (old or new
 * stack, every file it names present). OBD_LIVE_KILLS sets the number of kill points
 * (default 20; more for a long run).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { controlRequest } from '../../src/live/client.ts';
import { prng } from '../helpers/kill.ts';
import { tempDir } from '../helpers/temp.ts';
import { startRegistry } from '../remote/helpers/registry.ts';
import type { RawClient } from '../nbd/helpers/client.ts';
import { BLOCK, VSIZE, baseLayer, connect, mustFlush, mustRead, pattern, serveLive } from './helpers.ts';

const KILLS = Number(process.env.OBD_LIVE_KILLS ?? 20);
const BLOCKS = VSIZE / BLOCK;

describe('live snapshots under SIGKILL', { timeout: 600_000 }, () => {
  it(`keeps every flushed write and a whole record over ${KILLS} kill points`, async (t) => {
    const dir = await tempDir(t, 'obd-live-kill-');
    const reg = await startRegistry();
    t.after(() => reg.stop());
    const { raw, layer } = await baseLayer(dir);
    const rand = prng(20261202);
    const recordPath = path.join(dir, 'rw.data.config.v1.json');
    /** Writes issued so far (write i goes to block i % BLOCKS with pattern `w<i>`). */
    let issued = 0;
    /** Writes acknowledged by a flush (a killed trial leaves gaps of unflushed ones). */
    const durable: boolean[] = [];
    let flushed = 0;
    const expectBlock = (i: number) => pattern(`w${i}`);
    const phases = new Map<string, number>();
    const log: string[] = [];
    let snaps = 0;
    let attempts = 0;

    const verify = async (c: RawClient) => {
      // The newest write to a block wins; blocks written after `flushed` may hold either.
      const lastFlushed = new Map<number, number>();
      for (let i = 0; i < issued; i++) if (durable[i]) lastFlushed.set(i % BLOCKS, i);
      for (let b = 0; b < BLOCKS; b++) {
        const i = lastFlushed.get(b);
        if (i === undefined) continue;
        const got = await mustRead(c, b * BLOCK, BLOCK);
        let ok = got.equals(expectBlock(i));
        for (let j = i + BLOCKS; !ok && j < issued; j += BLOCKS) ok = got.equals(expectBlock(j));
        assert.ok(ok, `block ${b}: flushed write ${i} is lost`);
      }
      const untouched = await mustRead(c, VSIZE - BLOCK, BLOCK);
      if (issued < BLOCKS) assert.deepEqual(untouched, raw.subarray(VSIZE - BLOCK));
    };

    for (let trial = 0; trial <= KILLS; trial++) {
      const live = await serveLive(dir, [layer]);
      const killed = live.serve.exited;
      t.after(async () => {
        live.serve.child.kill('SIGKILL');
        await killed;
      });
      const c = await connect(live.socket);
      await verify(c).catch(async (e) => {
        throw new Error(`${(e as Error).message}; record: ${await readFile(recordPath, 'utf8')}; log: ${log.join(' | ')}`);
      });
      if (trial === KILLS) {
        c.disconnect();
        assert.equal(await live.serve.stop(), 0, live.serve.stderr());
        break;
      }
      let stop = false;
      const writer = (async () => {
        while (!stop) {
          const from = issued;
          for (let k = 0; k < 8; k++, issued++) {
            const r = await c.write((issued % BLOCKS) * BLOCK, expectBlock(issued));
            if (r.error !== 0) throw new Error(`write ${issued}: ${r.error}`);
          }
          await mustFlush(c);
          for (let i = from; i < from + 8; i++) durable[i] = true;
          flushed += 8;
        }
      })().catch(() => {});
      const snapshotter = (async () => {
        for (let k = 0; !stop; k++) {
          const kind = attempts++ % 4;
          const body: Record<string, unknown> = {};
          if (kind >= 1) body.commit = path.join(dir, `c-${trial}-${k}.${kind === 2 ? 'zfile' : 'lsmt'}`);
          if (kind === 2) body.compress = 'lz4';
          if (kind === 3) body.push = `${reg.host}/live/kill:t${trial}-${k}`;
          try {
            await controlRequest({ address: live.control }, 'POST', '/v1/snapshot', body);
            snaps++;
            phases.set(`done${kind}`, (phases.get(`done${kind}`) ?? 0) + 1);
          } catch (e) {
            // Killed mid-request, or a push refused after an earlier kill: the disk decides.
            log.push(`t${trial} snap ${k} ${JSON.stringify(body)}: ${(e as Error).message}`);
          }
        }
      })();
      await sleep(100 + rand() * 700);
      log.push(`t${trial} kill at issued ${issued} flushed ${flushed}`);
      live.serve.child.kill('SIGKILL');
      stop = true;
      await live.serve.exited;
      await Promise.all([writer, snapshotter]);
      c.socket.destroy();

      const record = JSON.parse(await readFile(recordPath, 'utf8'));
      for (const l of record.lowers) for (const f of [l.file, l.data, l.index].filter(Boolean)) assert.ok(existsSync(f), `recorded ${f} exists`);
      assert.ok(existsSync(record.upper.data) && existsSync(record.upper.index), 'the recorded upper exists');
    }
    t.diagnostic(`${KILLS} kills, ${issued} writes (${flushed} flushed), ${snaps} snapshots completed (${[...phases].map(([k, v]) => `${k}: ${v}`).join(', ')})`);
    assert.ok(snaps > KILLS / 2, `snapshots ran between the kills: ${log.join(" | ")}`);
  });
});
