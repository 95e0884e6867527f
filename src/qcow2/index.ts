export { openQcow2Chain, isQcow2, type Qcow2Chain, type ChainImage, type OpenChainOptions } from './chain.ts';
export { Qcow2Device } from './device.ts';
export { Qcow2File } from './file.ts';
export { readHeader, hasQcow2Magic, type Qcow2Header, type CompressionType } from './header.ts';
export { Qcow2UnsupportedError, UncleanImageError } from './errors.ts';
export { importQcow2, planChainLayers, importChainLayer, type ChainLayerPlan } from './import.ts';
