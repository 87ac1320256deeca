// Owns the controller's start-up sequence: migrate → onboard|doctor → migrate → harden → configure → start.
import type { Logger } from '../log.ts';
import { ALL_STORE_LAYOUTS, type ProfilePort } from './profile-port.ts';
import { errInfo } from './supervisor.ts';

export type BootstrapPhase =
  | 'init'
  | 'key-file'
  | 'migrate'
  | 'onboard'
  | 'doctor'
  | 'migrate-after-doctor'
  | 'harden-backups'
  | 'configure'
  | 'gateway-start';

export interface BootstrapSteps {
  profiles: ProfilePort;
  log: Logger;
  /** Shown in `/_kilo/health` while bootstrapping. */
  setPhase: (phase: BootstrapPhase) => void;
  /** File delivery: write the initial key file (before migration, which points refs at it). */
  writeKeyFile: (() => Promise<void>) | null;
  /** True when the state dir has no openclaw.json yet. */
  isFresh: () => Promise<boolean>;
  /** null with `--gateway-cmd`: a custom gateway is neither onboarded nor doctored. */
  onboard: (() => Promise<void>) | null;
  doctor: (() => Promise<void>) | null;
  configure: () => Promise<void>;
  startGateway: () => Promise<void>;
}

export class StageError extends Error {
  override name = 'StageError';
  readonly stage: BootstrapPhase;
  constructor(stage: BootstrapPhase, cause: unknown) {
    super(`Startup failed during ${stage}`, { cause });
    this.stage = stage;
  }
}

/**
 * Runs the sequence; resolves on success, throws StageError(stage) on the first failure. The
 * error carries only the stage label; details are logged here, never put in a response.
 */
export async function runBootstrap(s: BootstrapSteps): Promise<void> {
  const phase = async (name: BootstrapPhase, fn: () => Promise<void>) => {
    s.setPhase(name);
    const started = performance.now();
    try {
      await fn();
    } catch (err) {
      s.log.error({ phase: name, err: errInfo(err) }, 'Bootstrap phase failed');
      throw new StageError(name, err);
    }
    s.log.info({ phase: name, ms: Math.round(performance.now() - started) }, 'Bootstrap phase done');
  };
  const migrate = async () => {
    const r = await s.profiles.migrate(ALL_STORE_LAYOUTS);
    s.log.info(
      {
        profilesMigrated: r.profilesMigrated,
        storesFailed: r.storesFailed,
        backupsHardened: r.backupsHardened,
      },
      'Profile stores migrated',
    );
    // A store we could not rewrite still holds plaintext; doctor would import it and the gateway
    // would prefer it over the env, so starting would only hide the failed rotation.
    if (r.storesFailed > 0) throw new Error(`${r.storesFailed} profile store(s) could not be migrated`);
  };

  if (s.writeKeyFile) await phase('key-file', s.writeKeyFile);
  await phase('migrate', migrate);
  const fresh = await s.isFresh();
  if (fresh && s.onboard) await phase('onboard', s.onboard);
  if (!fresh && s.doctor) await phase('doctor', s.doctor);
  // Doctor imports legacy JSON into SQLite and keeps plaintext it finds; onboard may create stores.
  await phase('migrate-after-doctor', migrate);
  await phase('harden-backups', async () => {
    const n = await s.profiles.hardenBackups();
    if (n > 0) s.log.info({ backupsHardened: n }, 'Credential backups hardened to 0600');
  });
  await phase('configure', s.configure);
  await phase('gateway-start', s.startGateway);
}
