// Owns the binding of the controller's ProfilePort to the profiles module (src/profiles/).
import type { ProfilesResult } from '../profiles/types.ts';
import type { ProfileFormRow, ProfilePort, ProfilePortOptions, StoreLayout } from './profile-port.ts';

interface ProfilesModule {
  migrateProfiles(opts: {
    stateDir: string;
    provider: string;
    target: ProfilePortOptions['target'];
    layouts?: StoreLayout[];
    log?: ProfilePortOptions['log'];
  }): ProfilesResult | Promise<ProfilesResult>;
  scanProfiles(opts: {
    stateDir: string;
    provider: string;
    log?: ProfilePortOptions['log'];
  }): ProfilesResult | Promise<ProfilesResult>;
  hardenBackups(stateDir: string): number | { hardened: number } | Promise<number | { hardened: number }>;
  profileForms(result: ProfilesResult): ProfileFormRow[];
}

async function loadModule(): Promise<ProfilesModule> {
  // Resolved at run time so the controller builds while the profiles module is still landing.
  const specifier = new URL('../profiles/index.ts', import.meta.url).href;
  const mod: Partial<ProfilesModule> = await import(specifier);
  if (!mod.migrateProfiles || !mod.scanProfiles || !mod.hardenBackups || !mod.profileForms) {
    throw new Error('profiles module lacks migrateProfiles/scanProfiles/hardenBackups/profileForms');
  }
  return mod as ProfilesModule;
}

export function createProfilePort(opts: ProfilePortOptions): ProfilePort {
  let mod: Promise<ProfilesModule> | null = null;
  const m = () => {
    mod ??= loadModule();
    return mod;
  };
  return {
    async migrate(layouts) {
      const r = await (await m()).migrateProfiles({
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
      const mm = await m();
      return mm.profileForms(
        await mm.scanProfiles({ stateDir: opts.stateDir, provider: opts.provider, log: opts.log }),
      );
    },
    async hardenBackups() {
      const r = await (await m()).hardenBackups(opts.stateDir);
      return typeof r === 'number' ? r : r.hardened;
    },
  };
}
