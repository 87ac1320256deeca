// Owns the file key source: a mounted Secret directory or a single file holding the key.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { contentVersion } from './content-version.ts';
import { checkMaterial, type KeyMaterial, type KeySource, KeySourceError } from './key-source.ts';

export interface FileSourceOptions {
  /** A file with the key, or a directory (a mounted Secret) with a file named `keyName`. */
  path: string;
  /** File inside a directory source; default `KILOCODE_API_KEY`. */
  keyName?: string;
  /** Keys the content version when the source gives no version label (content-version.ts). */
  versionKey: string;
}

/** Sidecar files that carry a version label (a Secret's `keyroll.dev/version`, mounted as a file). */
const DIR_VERSION_FILES = ['keyroll.dev-version', 'version'];

async function readOptional(path: string): Promise<string | null> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

export function fileKeySource(opts: FileSourceOptions): KeySource {
  const keyName = opts.keyName ?? 'KILOCODE_API_KEY';
  return {
    describe: `file ${opts.path}`,
    async current(): Promise<KeyMaterial> {
      let keyPath: string;
      let versionPaths: string[];
      try {
        const st = await stat(opts.path);
        if (st.isDirectory()) {
          keyPath = join(opts.path, keyName);
          versionPaths = DIR_VERSION_FILES.map((f) => join(opts.path, f));
        } else {
          keyPath = opts.path;
          versionPaths = [`${opts.path}.version`];
        }
        // A Secret volume updates through a symlink swap; reading the key last keeps the pair
        // consistent enough, and the fingerprint (not the label) decides convergence anyway.
        let version: string | null = null;
        for (const p of versionPaths) {
          version = await readOptional(p);
          if (version) break;
        }
        // Trailing whitespace is how files end; anything else that is not part of one printable
        // token (a space inside, a second line) is refused by checkMaterial, not trimmed away.
        const key = (await readFile(keyPath, 'utf8')).replace(/\s+$/, '');
        return checkMaterial(
          `key source file ${keyPath}`,
          key,
          version || contentVersion(key, opts.versionKey),
        );
      } catch (err) {
        if (err instanceof KeySourceError) throw err;
        const code = (err as NodeJS.ErrnoException).code ?? 'error';
        throw new KeySourceError(`key source file ${opts.path}: cannot read (${code})`);
      }
    },
  };
}
