/** SIGKILL trials of `obd import`: plain, over --base, and -z (see kill-layers.ts). */
import { layerKillSuite } from './kill-layers.ts';

// A fixed uuid: by default every import draws a new one, and the outputs are compared by bytes.
const UUID = '6f1d0c2e-0d7a-4c55-9a43-0c3e5b1f0a04';

layerKillSuite('SIGKILL trials of import', 1100, [
  ['obd import', (I, out) => ['import', '--uuid', UUID, I('disk.raw'), out]],
  ['obd import --base', (I, out) => ['import', '--uuid', UUID, '--base', I('l0.lsmt'), I('l1.lsmt'), '--', I('disk.raw'), out]],
  ['obd import -z zstd', (I, out) => ['import', '--uuid', UUID, '-z', 'zstd', I('disk.raw'), out]],
]);
