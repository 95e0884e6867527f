/** SIGKILL trials of `obd commit` (plain and -z) and `obd merge` (see kill-layers.ts). */
import { layerKillSuite } from './kill-layers.ts';

layerKillSuite('SIGKILL trials of commit and merge', 1000, [
  ['obd commit', (I, out) => ['commit', I('w.data'), I('w.index'), out]],
  ['obd commit -z lz4 -t', (I, out) => ['commit', '-z', 'lz4', '-t', I('w.data'), I('w.index'), out]],
  ['obd merge', (I, out) => ['merge', I('l0.lsmt'), I('l1.lsmt'), out]],
]);
