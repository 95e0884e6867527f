import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { AREAS } from '../../src/cli/areas.ts';

test('every area registers exactly the commands the lazy loader maps to it', async () => {
  const seen = new Set<string>();
  for (const [commands, load] of AREAS) {
    const program = new Command('obd');
    (await load()).register(program);
    assert.deepEqual(program.commands.map((c) => c.name()).sort(), [...commands].sort());
    for (const c of commands) {
      assert.ok(!seen.has(c), `${c} is mapped twice`);
      seen.add(c);
    }
  }
});
