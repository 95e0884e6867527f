/**
 * A device's capabilities, computed once. Devices of this project declare them; for any other
 * BlockDevice they are derived from the methods it has, so exports never test methods per
 * request.
 */
import { declareCapabilities } from '../io/capabilities.ts';
import type { BlockDevice, DeviceCapabilities } from '../io/types.ts';

const derived = new WeakMap<BlockDevice, DeviceCapabilities>();

/** The device's declared capabilities, or ones derived from its methods (cached per device). */
export function capabilitiesOf(dev: BlockDevice): DeviceCapabilities {
  if (dev.capabilities) return dev.capabilities;
  let caps = derived.get(dev);
  if (!caps) {
    caps = declareCapabilities({ write: dev.writable && typeof dev.write === 'function', trim: typeof dev.trim === 'function', flush: typeof dev.flush === 'function' });
    derived.set(dev, caps);
  }
  return caps;
}
