// Owns how a Fly machine's in-pod controller is addressed: its 6PN `private_ip` plus the
// controller port (a per-machine metadata override wins, like the pod annotation on Kubernetes).
import { isIP } from 'node:net';
import { MachineAddressError } from './errors.ts';
import type { Machine } from './schemas.ts';

/** `config.metadata` key that overrides the controller port for one machine. */
export const PORT_METADATA_KEY = 'keyroll_port';

function parsePort(value: string | undefined): number | null {
  if (value === undefined || !/^\d{1,5}$/.test(value)) return null;
  const port = Number(value);
  return port >= 1 && port <= 65_535 ? port : null;
}

/** The controller port for a machine: its `keyroll_port` metadata when valid, else `defaultPort`. */
export function controllerPort(machine: Machine, defaultPort: number): number {
  return parsePort(machine.config?.metadata?.[PORT_METADATA_KEY]) ?? defaultPort;
}

/**
 * `http://[fdaa:…]:port` for the machine's private IPv6 address (brackets are required around an
 * IPv6 literal in a URL), `http://a.b.c.d:port` for IPv4. Throws `MachineAddressError` when the
 * machine has no private address or it is not an IP literal.
 */
export function controllerUrl(machine: Machine, port: number): string {
  const ip = machine.private_ip?.trim();
  if (!ip) throw new MachineAddressError(machine.id, 'private_ip is missing');
  const family = isIP(ip);
  if (family === 0) throw new MachineAddressError(machine.id, 'private_ip is not an IP address');
  const p = controllerPort(machine, port);
  return family === 6 ? `http://[${ip}]:${p}` : `http://${ip}:${p}`;
}
