// Owns turning a Fly machine listing into reconciler targets: which machines count, and how each
// started machine's in-pod controller is reached (private address + controller port).

import type { Target } from '../engine/target.ts';
import { type ControllerClient, httpControllerClient } from '../reconcile/controller-client.ts';
import { controllerUrl } from './address.ts';
import { MachineAddressError } from './errors.ts';
import type { Machine } from './schemas.ts';

/** States of machines that are gone or being replaced: not part of the app's fleet any more. */
export const GONE_STATES: ReadonlySet<string> = new Set(['destroyed', 'destroying', 'replaced', 'migrated']);

/** Pure: the machines the loop looks at, in a stable order. */
export function fleetMachines(machines: readonly Machine[]): Machine[] {
  return machines
    .filter((m) => !GONE_STATES.has(m.state))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export type MachineTarget = { machine: Machine; target: Target } | { machine: Machine; addressError: string };

export interface TargetOptions {
  /** Controller port; a machine's `keyroll_port` metadata overrides it (src/fly/address.ts). */
  port: number;
  /** The controllers' bearer token (OPENCLAW_GATEWAY_TOKEN). */
  token: string;
  timeoutMs: number;
  /** Test seam and extension point: how to talk to a controller at `url`. */
  client?: (url: string, token: string) => ControllerClient;
}

/** One reconciler target per started machine, named by machine id; a bad address is reported. */
export function machineTarget(machine: Machine, opts: TargetOptions): MachineTarget {
  let url: string;
  try {
    url = controllerUrl(machine, opts.port);
  } catch (err) {
    if (err instanceof MachineAddressError) return { machine, addressError: err.message };
    throw err;
  }
  const client = opts.client
    ? opts.client(url, opts.token)
    : httpControllerClient({ url, token: opts.token, timeoutMs: opts.timeoutMs });
  return {
    machine,
    target: {
      name: machine.id,
      url,
      labels: {
        machine: machine.id,
        ...(machine.name ? { name: machine.name } : {}),
        ...(machine.region ? { region: machine.region } : {}),
      },
      token: opts.token,
      client,
    },
  };
}
