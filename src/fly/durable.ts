// Owns durable delivery on Fly: comparing a machine config's key by fingerprint, and writing the
// key into `config.env` of a machine that is not running, under its lease, with `skip_launch`.
import { errorMessage } from '../errors.ts';
import { constantTimeEqual, fingerprintEnv } from '../fingerprint.ts';
import type { Logger } from '../log.ts';
import type { FlyClient } from './client.ts';
import { isLeaseHeld } from './errors.ts';
import { WRITABLE_STATES } from './machine-plan.ts';
import type { Machine, MachineConfig } from './schemas.ts';

/**
 * Pure: the fingerprint of `config.env[envVar]` keyed with the controller token, computed exactly
 * like the controller's `envHash`, so config and running process compare on one scale. Null when
 * the variable is absent. The value itself never leaves this function.
 */
export function configFingerprint(
  config: MachineConfig | undefined,
  envVar: string,
  token: string,
): string | null {
  const value = config?.env?.[envVar];
  return value === undefined ? null : fingerprintEnv(token, { [envVar]: value });
}

/** Pure: whether the config holds the desired key (fingerprints compared in constant time). */
export function configMatches(
  config: MachineConfig | undefined,
  envVar: string,
  token: string,
  desiredHash: string,
): boolean {
  const have = configFingerprint(config, envVar, token);
  return have !== null && constantTimeEqual(have, desiredHash);
}

/** Pure: a copy of the whole config (Fly has no partial update) with the key set in its env. */
export function withKey(config: MachineConfig | undefined, envVar: string, key: string): MachineConfig {
  const copy: MachineConfig = structuredClone(config ?? {});
  copy.env = { ...(copy.env ?? {}), [envVar]: key };
  return copy;
}

export type DurableWriteStatus =
  /** The config now holds the key; nothing booted. */
  | 'written'
  /** Someone else's write got there first: the config already matched under the lease. */
  | 'already'
  /** Someone else holds the lease: skipped this pass. */
  | 'lease-held'
  /** The machine left the writable states between the listing and the lease (e.g. started). */
  | 'state-changed'
  | 'failed';

export interface DurableWriteResult {
  status: DurableWriteStatus;
  /** Identifiers and codes only. */
  message: string;
  /** The lease holder, when `lease-held` and Fly said who. */
  owner?: string | null;
}

export interface DurableWriteInput {
  fly: FlyClient;
  app: string;
  machineId: string;
  envVar: string;
  key: string;
  token: string;
  desiredHash: string;
  leaseTtlSeconds: number;
  signal: AbortSignal;
  log: Logger;
}

/** Asks Fly who holds the lease, for the report; best effort (one read). */
export async function leaseOwner(
  fly: FlyClient,
  app: string,
  id: string,
  signal: AbortSignal,
): Promise<string | null> {
  try {
    return (await fly.getLease(app, id, { signal }))?.owner ?? null;
  } catch {
    return null;
  }
}

/** Releases a lease with its own short timeout, so an aborted pass still gives the lease back. */
export async function releaseQuietly(
  fly: FlyClient,
  app: string,
  id: string,
  nonce: string,
  log: Logger,
): Promise<void> {
  try {
    await fly.releaseLease(app, id, nonce, { signal: AbortSignal.timeout(15_000) });
  } catch (err) {
    // The lease expires on its own (its TTL is bounded); nothing else depends on the release.
    log.warn(
      { machine: id, error: errorMessage(err) },
      'Could not release the machine lease; it will expire',
    );
  }
}

/**
 * lease → get (fresh, under the lease) → re-check state and fingerprint → update with
 * `skip_launch`, `current_version` and the lease nonce → release (always). Only machines in a
 * writable state are written, so the write never boots or restarts anything.
 */
export async function writeDurable(i: DurableWriteInput): Promise<DurableWriteResult> {
  const log = i.log.child({ component: 'fly-durable', machine: i.machineId });
  let nonce: string;
  try {
    nonce = (
      await i.fly.acquireLease(i.app, i.machineId, {
        ttlSeconds: i.leaseTtlSeconds,
        description: 'keyroll: write rotated key into machine config',
        signal: i.signal,
      })
    ).nonce;
  } catch (err) {
    if (isLeaseHeld(err)) {
      const owner = await leaseOwner(i.fly, i.app, i.machineId, i.signal);
      return { status: 'lease-held', message: `lease held by ${owner ?? 'another client'}`, owner };
    }
    return { status: 'failed', message: errorMessage(err) };
  }
  try {
    let machine: Machine;
    try {
      machine = await i.fly.getMachine(i.app, i.machineId, { signal: i.signal });
    } catch (err) {
      return { status: 'failed', message: errorMessage(err) };
    }
    if (!WRITABLE_STATES.has(machine.state)) {
      return { status: 'state-changed', message: `machine became ${machine.state}; not written` };
    }
    if (configMatches(machine.config, i.envVar, i.token, i.desiredHash)) {
      return { status: 'already', message: 'config already holds the key' };
    }
    try {
      await i.fly.updateMachine(i.app, i.machineId, withKey(machine.config, i.envVar, i.key), {
        skipLaunch: true,
        leaseNonce: nonce,
        ...(machine.instance_id ? { currentVersion: machine.instance_id } : {}),
        signal: i.signal,
      });
    } catch (err) {
      if (isLeaseHeld(err)) return { status: 'lease-held', message: 'lease taken over during the write' };
      return { status: 'failed', message: errorMessage(err) };
    }
    log.info({ state: machine.state }, 'Wrote rotated key into machine config (skip_launch)');
    return { status: 'written', message: 'config written with skip_launch' };
  } finally {
    await releaseQuietly(i.fly, i.app, i.machineId, nonce, log);
  }
}
