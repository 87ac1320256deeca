// Owns the secret values a process knows and scrubbing them out of any text: log lines, CLI
// output, error messages. Pino-free, so the profile stores, the CLI and the logger share it.

export const REDACTED = '[REDACTED]';

/**
 * Ends a line that was cut to a length bound. A secret that straddled the cut would survive as a
 * prefix the value scrub does not match, so the scrub also redacts a secret's leading part
 * (6 characters or more) right before this mark.
 */
export const CUT_MARK = '…';

/** Shorter values are too common to scrub safely. */
const MIN_SECRET_LENGTH = 6;

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The secret values known to this process. Every log line is scrubbed of them before it is
 * written, so a secret that slips into a message or an unexpected field never leaves.
 *
 * Bounded: a value registered under a slot (`add(value, 'env:KILOCODE_API_KEY')`) replaces the
 * slot's current value, which becomes its previous one, and the value before that is forgotten,
 * so a long-running process that sees key after key keeps two per slot (the old key stays
 * scrubbed while a gateway that was spawned with it is still stopping). A value registered
 * without a slot is kept for the registry's life: for the few values a process registers once
 * (its own token, a start-up key).
 *
 * One pass per line: a single RegExp alternation of every value (and its JSON-escaped form),
 * longest first, rebuilt only when the set changes.
 */
export class SecretRegistry {
  readonly #pinned = new Set<string>();
  readonly #slots = new Map<string, { current: string; previous: string | null }>();
  #pattern: RegExp | null = null;
  /** Values by their first MIN_SECRET_LENGTH characters, for cut-line prefixes. */
  #byHead: Map<string, string[]> | null = null;
  #maxLength = 0;

  /** Registers a value, under `slot` when given (see the class comment); short values are ignored. */
  add(value: string | undefined | null, slot?: string): void {
    if (!value || value.length < MIN_SECRET_LENGTH) return;
    if (slot === undefined) {
      if (this.#pinned.has(value)) return;
      this.#pinned.add(value);
    } else {
      const s = this.#slots.get(slot);
      if (s?.current === value) return;
      this.#slots.set(slot, { current: value, previous: s?.current ?? null });
    }
    this.#pattern = null;
    this.#byHead = null;
  }

  /** The distinct values being scrubbed. */
  values(): string[] {
    const all = new Set(this.#pinned);
    for (const s of this.#slots.values()) {
      all.add(s.current);
      if (s.previous !== null) all.add(s.previous);
    }
    return [...all];
  }

  get size(): number {
    return this.values().length;
  }

  #build(): void {
    const values = this.values();
    const forms = new Set<string>();
    const byHead = new Map<string, string[]>();
    let max = 0;
    for (const v of values) {
      forms.add(v);
      // JSON-escaped form of the value (a secret with quotes or backslashes inside).
      forms.add(JSON.stringify(v).slice(1, -1));
      const head = v.slice(0, MIN_SECRET_LENGTH);
      byHead.set(head, [...(byHead.get(head) ?? []), v]);
      max = Math.max(max, v.length);
    }
    // Longest first, so a value that contains another is redacted whole.
    const sorted = [...forms].sort((a, b) => b.length - a.length);
    this.#pattern = sorted.length > 0 ? new RegExp(sorted.map(escapeRegExp).join('|'), 'g') : null;
    this.#byHead = byHead;
    this.#maxLength = max;
  }

  scrub(text: string): string {
    if (this.#byHead === null) this.#build();
    let out = this.#pattern ? text.replace(this.#pattern, REDACTED) : text;
    if (out.includes(CUT_MARK) && this.#byHead!.size > 0) out = this.#scrubCutPrefixes(out);
    return out;
  }

  /** Redacts the longest leading part (6+ characters) of a value that ends right at a cut mark. */
  #scrubCutPrefixes(text: string): string {
    const byHead = this.#byHead!;
    let out = '';
    let from = 0;
    for (let at = text.indexOf(CUT_MARK); at !== -1; at = text.indexOf(CUT_MARK, at + 1)) {
      let start = -1;
      // The earliest start is the longest prefix; a whole value would have been redacted already.
      for (let j = Math.max(from, at - this.#maxLength + 1); j <= at - MIN_SECRET_LENGTH; j++) {
        const candidates = byHead.get(text.slice(j, j + MIN_SECRET_LENGTH));
        if (!candidates) continue;
        const part = text.slice(j, at);
        if (candidates.some((v) => v.length > part.length && v.startsWith(part))) {
          start = j;
          break;
        }
      }
      if (start !== -1) {
        out += `${text.slice(from, start)}${REDACTED}`;
        from = at;
      }
    }
    return out + text.slice(from);
  }
}
