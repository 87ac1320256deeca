// Owns durable delivery on Fly: the key's durable copy is the app's Fly secret (set through the
// Machines API, staged: no machine restarts), never a machine's `config.env`. Here: writing and
// checking that secret, and taking a stale key out of the config of a machine that is not running
// (under its lease, `skip_launch`, `min_secrets_version`), so a deploy or a boot gets the secret.
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

/**
 * Pure: whether the machine config is durable-correct, i.e. does not hold the key at all: the
 * app secret supplies it at every boot and a `fly deploy` (which rebuilds the config from
 * fly.toml) cannot bring back an old one. A config that holds the key, even the desired one, is
 * not: it must be taken out.
 */
export function configHoldsNoKey(config: MachineConfig | undefined, envVar: string): boolean {
  return config?.env?.[envVar] === undefined;
}

/**
 * Pure: the loop's durable check of one machine config: `configHoldsNoKey`. `token` and
 * `desiredHash` are not needed for it any more (the config never holds the key); they stay so the
 * loop keeps one call.
 */
export function configMatches(
  config: MachineConfig | undefined,
  envVar: string,
  _token?: string,
  _desiredHash?: string,
): boolean {
  return configHoldsNoKey(config, envVar);
}

/**
 * Pure: a copy of the config with the key set in its env. Not used by the loop any more (the key
 * never goes into `config.env`); kept only for tests of the old layout until they move.
 */
export function withKey(config: MachineConfig | undefined, envVar: string, key: string): MachineConfig {
  const copy: MachineConfig = structuredClone(config ?? {});
  copy.env = { ...(copy.env ?? {}), [envVar]: key };
  return copy;
}

/** Pure: a copy of the whole config (Fly has no partial update) without the key in its env. */
export function withoutKey(config: MachineConfig | undefined, envVar: string): MachineConfig {
  const copy: MachineConfig = structuredClone(config ?? {});
  if (copy.env) {
    const { [envVar]: _dropped, ...rest } = copy.env;
    copy.env = rest;
  }
  return copy;
}

/** What keyroll last wrote into an app secret through one client: the fingerprint, and what Fly answered. */
interface SecretWrite {
  fingerprint: string;
  digest: string | null;
  version: number;
}

/**
 * Per client (one per process), per app and variable. Fly's digest is opaque (it cannot be computed
 * from a value here) and values cannot be read back from outside the app's machines, so whether the
 * secret holds the desired key is known only for a key this process wrote: it remembers the digest
 * Fly listed after the write, and writes again when the key changes or the digest does (someone else
 * set the secret).
 */
const written = new WeakMap<FlyClient, Map<string, SecretWrite>>();

function memory(fly: FlyClient): Map<string, SecretWrite> {
  let m = written.get(fly);
  if (!m) {
    m = new Map();
    written.set(fly, m);
  }
  return m;
}

/** The app secrets version that holds the desired key, when this process wrote it (for `min_secrets_version`). */
export function secretVersionFor(
  fly: FlyClient,
  app: string,
  envVar: string,
  desiredHash: string,
): number | null {
  const w = memory(fly).get(`${app}\u0000${envVar}`);
  return w && constantTimeEqual(w.fingerprint, desiredHash) ? w.version : null;
}

export interface AppSecretInput {
  fly: FlyClient;
  app: string;
  envVar: string;
  key: string;
  /** The desired fingerprint (the controller's `envHash` scale). */
  desiredHash: string;
  /**
   * The fleet already runs the key: some started machine proves it and none needs a delivery.
   * Then an existing secret is taken as current even by a process that did not write it (a fresh
   * `--once` run): every delivery keyroll makes is preceded by this write.
   */
  provenLive?: boolean;
  signal: AbortSignal;
  log: Logger;
}

export interface AppSecretResult {
  status: 'written' | 'current';
  /** The app's secrets version holding the key (null: not written by this process). */
  version: number | null;
  /** Identifiers only. */
  message: string;
}

/**
 * Makes the app secret `envVar` hold the key: one list (names and digests), then, unless this
 * process already wrote this key and the listed digest is still the one it saw then, one
 * `POST /v1/apps/{app}/secrets/{name}`. Staged: setting a secret restarts no machine (Fly applies
 * it at each machine's next boot; flyctl's `secrets set` restarts them only because it deploys
 * afterwards, which `--stage` skips). Throws FlyApiError (no value in it) when Fly refuses.
 */
export async function writeAppSecret(i: AppSecretInput): Promise<AppSecretResult> {
  const key = `${i.app}\u0000${i.envVar}`;
  const mem = memory(i.fly);
  const listed = (await i.fly.listAppSecrets(i.app, { signal: i.signal })).find((s) => s.name === i.envVar);
  const last = mem.get(key);
  if (
    last &&
    listed &&
    constantTimeEqual(last.fingerprint, i.desiredHash) &&
    last.digest !== null &&
    listed.digest === last.digest
  ) {
    return { status: 'current', version: last.version, message: 'app secret holds the key' };
  }
  if (!last && listed && i.provenLive === true) {
    return {
      status: 'current',
      version: null,
      message: 'app secret set and the running fleet proves the key',
    };
  }
  const set = await i.fly.setAppSecret(i.app, i.envVar, i.key, { signal: i.signal });
  // The digest to compare with next time: Fly's answer, else what the listing shows now.
  let digest = set.digest ?? null;
  if (digest === null) {
    const again = await i.fly.listAppSecrets(i.app, { signal: i.signal });
    digest = again.find((s) => s.name === i.envVar)?.digest ?? null;
  }
  mem.set(key, { fingerprint: i.desiredHash, digest, version: set.version });
  i.log.info(
    { app: i.app, secret: i.envVar, version: set.version },
    'Set the app secret (staged: no machine restarts)',
  );
  return { status: 'written', version: set.version, message: `app secret set (version ${set.version})` };
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
  /** Not written any more (the app secret holds the key); accepted so callers keep one shape. */
  key?: string;
  token?: string;
  /** The desired fingerprint: picks the secrets version written for it (`min_secrets_version`). */
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
 * lease → get (fresh, under the lease) → re-check state and config → update with the key taken
 * out of `config.env`, `skip_launch`, `current_version`, the lease nonce and, when this process
 * wrote the app secret, `min_secrets_version` (so the next boot waits for the secret holding the
 * key) → release (always). Only machines in a writable state are written, so the write never
 * boots or restarts anything.
 */
export async function takeKeyOut(i: DurableWriteInput): Promise<DurableWriteResult> {
  const log = i.log.child({ component: 'fly-durable', machine: i.machineId });
  let nonce: string;
  try {
    nonce = (
      await i.fly.acquireLease(i.app, i.machineId, {
        ttlSeconds: i.leaseTtlSeconds,
        description: 'keyroll: take the key out of the machine config (the app secret holds it)',
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
    if (configHoldsNoKey(machine.config, i.envVar)) {
      return { status: 'already', message: 'config holds no key (the app secret does)' };
    }
    const minSecretsVersion = secretVersionFor(i.fly, i.app, i.envVar, i.desiredHash);
    try {
      await i.fly.updateMachine(i.app, i.machineId, withoutKey(machine.config, i.envVar), {
        skipLaunch: true,
        leaseNonce: nonce,
        ...(machine.instance_id ? { currentVersion: machine.instance_id } : {}),
        ...(minSecretsVersion !== null ? { minSecretsVersion } : {}),
        signal: i.signal,
      });
    } catch (err) {
      if (isLeaseHeld(err)) return { status: 'lease-held', message: 'lease taken over during the write' };
      return { status: 'failed', message: errorMessage(err) };
    }
    log.info(
      { state: machine.state, minSecretsVersion },
      'Took the key out of the machine config (skip_launch); the app secret supplies it',
    );
    return {
      status: 'written',
      message:
        minSecretsVersion !== null
          ? `key taken out of config.env, min_secrets_version ${minSecretsVersion}, skip_launch`
          : 'key taken out of config.env, skip_launch',
    };
  } finally {
    await releaseQuietly(i.fly, i.app, i.machineId, nonce, log);
  }
}

/** The loop's durable write of a machine that is not running: `takeKeyOut`. */
export const writeDurable = takeKeyOut;
