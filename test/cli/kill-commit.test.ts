/** SIGKILL trials of `obd commit` (plain and -z) and `obd merge` (see kill-layers.ts). */
import { layerKillSuite } from './kill-layers.ts';

layerKillSuite('SIGKILL trials of commit and merge', 1000, [
  ['obd commit', (I, out) => ['commit', '--uuid', '6f1d0c2e-0d7a-4c55-9a43-0c3e5b1f0a04', I('w.data'), I('w.index'), out]],
  ['obd commit -z lz4 -t', (I, out) => ['commit', '--uuid', '6f1d0c2e-0d7a-4c55-9a43-0c3e5b1f0a04', '-z', 'lz4', '-t', I('w.data'), I('w.index'), out]],
  ['obd merge', (I, out) => ['merge', I('l0.lsmt'), I('l1.lsmt'), out]],
]);
