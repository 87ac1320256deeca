// Owns the binding of the controller's ProfilePort to the profiles module (src/profiles/).
import { hardenBackups, migrateProfiles, profileForms, scanProfiles } from '../profiles/index.ts';
import type { ProfilePort, ProfilePortOptions } from './profile-port.ts';

export function createProfilePort(opts: ProfilePortOptions): ProfilePort {
  return {
    async migrate(layouts) {
      const r = await migrateProfiles({
        stateDir: opts.stateDir,
        provider: opts.provider,
        target: opts.target,
        ...(layouts ? { layouts } : {}),
        log: opts.log,
      });
      return {
        profilesMigrated: r.profilesMigrated,
        storesFailed: r.storesFailed,
        backupsHardened: r.backupsHardened,
      };
    },
    async scan() {
      return profileForms(
        await scanProfiles({ stateDir: opts.stateDir, provider: opts.provider, log: opts.log }),
      );
    },
    hardenBackups: () => hardenBackups(opts.stateDir),
  };
}
