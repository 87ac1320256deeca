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

/** Adds `v` to the list under `k` (`dropFrom` takes one out again). */
function addTo(index: Map<string, string[]>, k: string, v: string): void {
  const list = index.get(k);
  if (list) list.push(v);
  else index.set(k, [v]);
}

function dropFrom(index: Map<string, string[]>, k: string, v: string): void {
  const list = index.get(k);
  const at = list ? list.indexOf(v) : -1;
  if (!list || at < 0) return;
  list.splice(at, 1);
  if (list.length === 0) index.delete(k);
}

/** A value and its JSON-escaped form (a secret with quotes or backslashes inside), distinct. */
function formsOf(v: string): string[] {
  const escaped = JSON.stringify(v).slice(1, -1);
  return escaped === v ? [v] : [v, escaped];
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
 * One pass per line, whatever the number of values, and nothing rebuilt when a value comes or
 * goes: each value (and its JSON-escaped form) is indexed by its last 6 characters and its
 * length; a line is scanned once, each 6-character window looked up, and where one is the tail of
 * a value, the window of that value's length ending there. (A RegExp alternation of every value,
 * rebuilt on each change, was most of the operator's CPU in its first full reconcile of 1,000
 * GatewayKeys: two new slots per GatewayKey, each a rebuild of a 1,000-value pattern; BENCHMARKS.md.)
 */
export class SecretRegistry {
  readonly #pinned = new Set<string>();
  readonly #slots = new Map<string, { current: string; previous: string | null }>();
  /** Each distinct value: how many holders (pinned, a slot's current or previous) keep it. */
  readonly #refs = new Map<string, number>();
  /**
   * Forms (value, JSON-escaped value) by their last MIN_SECRET_LENGTH characters, then by length:
   * a window of the line is looked up whole, so values sharing a tail (a common suffix) cost one
   * lookup per length, not one comparison per value.
   */
  readonly #byTail = new Map<string, Map<number, Map<string, number>>>();
  /** Values by their first MIN_SECRET_LENGTH characters, for cut-line prefixes. */
  readonly #byHead = new Map<string, string[]>();
  #maxLength = 0;

  /** Registers a value, under `slot` when given (see the class comment); short values are ignored. */
  add(value: string | undefined | null, slot?: string): void {
    if (!value || value.length < MIN_SECRET_LENGTH) return;
    if (slot === undefined) {
      if (this.#pinned.has(value)) return;
      this.#pinned.add(value);
      this.#hold(value);
      return;
    }
    const s = this.#slots.get(slot);
    if (s?.current === value) return;
    this.#slots.set(slot, { current: value, previous: s?.current ?? null });
    this.#hold(value);
    if (s?.previous != null) this.#release(s.previous);
  }

  /** The distinct values being scrubbed. */
  values(): string[] {
    return [...this.#refs.keys()];
  }

  get size(): number {
    return this.#refs.size;
  }

  #hold(v: string): void {
    const n = this.#refs.get(v) ?? 0;
    this.#refs.set(v, n + 1);
    if (n > 0) return;
    for (const f of formsOf(v)) {
      const tail = f.slice(-MIN_SECRET_LENGTH);
      const byLength = this.#byTail.get(tail) ?? new Map<number, Map<string, number>>();
      this.#byTail.set(tail, byLength);
      // Counted: one value's escaped form may be another value.
      const forms = byLength.get(f.length) ?? new Map<string, number>();
      byLength.set(f.length, forms);
      forms.set(f, (forms.get(f) ?? 0) + 1);
    }
    addTo(this.#byHead, v.slice(0, MIN_SECRET_LENGTH), v);
    this.#maxLength = Math.max(this.#maxLength, v.length);
  }

  #release(v: string): void {
    const n = this.#refs.get(v) ?? 0;
    if (n > 1) {
      this.#refs.set(v, n - 1);
      return;
    }
    this.#refs.delete(v);
    for (const f of formsOf(v)) {
      const tail = f.slice(-MIN_SECRET_LENGTH);
      const byLength = this.#byTail.get(tail);
      const forms = byLength?.get(f.length);
      const count = forms?.get(f);
      if (!byLength || !forms || count === undefined) continue;
      if (count > 1) {
        forms.set(f, count - 1);
        continue;
      }
      forms.delete(f);
      if (forms.size === 0) byLength.delete(f.length);
      if (byLength.size === 0) this.#byTail.delete(tail);
    }
    dropFrom(this.#byHead, v.slice(0, MIN_SECRET_LENGTH), v);
  }

  scrub(text: string): string {
    let out = this.#byTail.size > 0 ? this.#scrubValues(text) : text;
    if (out.includes(CUT_MARK) && this.#byHead.size > 0) out = this.#scrubCutPrefixes(out);
    return out;
  }

  /**
   * Every occurrence of a value, found by its last characters; overlapping ones resolved as a
   * left-to-right, longest-first alternation would: the earliest start wins, the longest there.
   */
  #scrubValues(text: string): string {
    const found: Array<[start: number, end: number]> = [];
    for (let end = MIN_SECRET_LENGTH; end <= text.length; end++) {
      const byLength = this.#byTail.get(text.slice(end - MIN_SECRET_LENGTH, end));
      if (!byLength) continue;
      for (const [length, forms] of byLength) {
        const start = end - length;
        if (start >= 0 && forms.has(text.slice(start, end))) found.push([start, end]);
      }
    }
    if (found.length === 0) return text;
    found.sort((a, b) => a[0] - b[0] || b[1] - a[1]);
    let out = '';
    let from = 0;
    for (const [start, end] of found) {
      if (start < from) continue;
      out += `${text.slice(from, start)}${REDACTED}`;
      from = end;
    }
    return out + text.slice(from);
  }

  /** Redacts the longest leading part (6+ characters) of a value that ends right at a cut mark. */
  #scrubCutPrefixes(text: string): string {
    const byHead = this.#byHead;
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
