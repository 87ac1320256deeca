// Owns scrubbing known key values out of error text: the backstop behind value-free messages.

/** Values shorter than this are too common to scrub safely (and are not keys). */
const MIN_SECRET_LENGTH = 6;

export class Scrubber {
  #values = new Set<string>();

  add(value: string): void {
    if (value.length >= MIN_SECRET_LENGTH) this.#values.add(value);
  }

  scrub(text: string): string {
    let out = text;
    for (const v of this.#values) {
      if (out.includes(v)) out = out.split(v).join('[REDACTED]');
      const escaped = JSON.stringify(v).slice(1, -1);
      if (escaped !== v && out.includes(escaped)) out = out.split(escaped).join('[REDACTED]');
    }
    return out;
  }
}
