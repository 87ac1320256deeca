// Owns the binding of the controller's ProfilePort to the profiles module (src/profiles/).
import {
  countBackups,
  hardenBackups,
  isBusyStoreError,
  migrateProfiles,
  type ProfileResult,
  profileForms,
  scanProfiles,
} from '../profiles/index.ts';
import type { ProfilePort, ProfilePortOptions } from './profile-port.ts';

/**
 * How long the scan behind `/_kilo/state` waits (asynchronously) for a locked SQLite store
 * before it reports the store's last known forms instead.
 */
export const STATE_SCAN_BUSY_MS = 200;

export function createProfilePort(opts: ProfilePortOptions): ProfilePort {
  /** The profiles of each store at its last successful read, by path. */
  const lastKnown = new Map<string, ProfileResult[]>();
  return {
    async migrate(layouts) {
      const r = await migrateProfiles({
        stateDir: opts.stateDir,
        ...(opts.configPath ? { configPath: opts.configPath() } : {}),
        provider: opts.provider,
        target: opts.target,
        ...(layouts ? { layouts } : {}),
        log: opts.log,
        purgePlaintextBackups: opts.purgePlaintextBackups ?? false,
      });
      return {
        profilesMigrated: r.profilesMigrated,
        storesFailed: r.storesFailed,
        backupsHardened: r.backupsHardened,
      };
    },
    async scan() {
      const r = await scanProfiles({
        stateDir: opts.stateDir,
        ...(opts.configPath ? { configPath: opts.configPath() } : {}),
        provider: opts.provider,
        log: opts.log,
        busyTimeoutMs: opts.scanBusyTimeoutMs ?? STATE_SCAN_BUSY_MS,
      });
      // A store locked by the gateway right now is not unreadable: report what it held when it
      // was last read (a store never read yet stays `unreadable`), and ask again next time.
      for (const s of r.stores) {
        if (s.error === null) lastKnown.set(s.path, s.profiles);
        else if (isBusyStoreError(s.error)) s.profiles = lastKnown.get(s.path) ?? s.profiles;
      }
      return profileForms(r);
    },
    hardenBackups: () => hardenBackups(opts.stateDir),
    backups: () => countBackups(opts.stateDir, opts.provider),
  };
}
