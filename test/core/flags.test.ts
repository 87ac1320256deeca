// Flags shared by every command and the controller: Go durations (the one parser), flags declared
// by the usage text, deprecated aliases with a warning, and `--flag: why` errors.
import { describe, expect, it } from 'vitest';
import * as z from 'zod';
import { DURATION_PATTERN, parseDuration } from '../../src/duration.ts';
import { UsageError } from '../../src/errors.ts';
import {
  countFlag,
  durationFlag,
  millisecondsFlag,
  optionsFromUsage,
  parseCommandLine,
  parseFlagValues,
  portFlag,
} from '../../src/flags.ts';

describe('parseDuration: Go notation, as the CRD accepts it', () => {
  it.each([
    ['1h30m', 5_400_000],
    ['90s', 90_000],
    ['250ms', 250],
    ['1.5s', 1500],
    ['72h', 259_200_000],
    ['2m30s', 150_000],
    ['1500us', 2],
    ['0s', 0],
  ])('%s = %i ms, and the CRD pattern agrees', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
    expect(DURATION_PATTERN.test(text)).toBe(true);
  });

  it.each([
    ['90', /got '90' \(no unit: write 90s for seconds\)/],
    ['-5s', /got '-5s' \(a duration cannot be negative\)/],
    ['1x', /got '1x' \(unknown unit 'x'; units are ns, us, ms, s, m, h\)/],
    ['1d', /unknown unit 'd'/],
    ['', /\(empty\)/],
    ['2m30', /a number needs a unit/],
    [' 5s', /expected a number and a unit/],
    ['soon', /expected a duration such as 1h30m, 90s or 250ms, got 'soon'/],
  ])('%j is refused: %s', (text, message) => {
    expect(() => parseDuration(text)).toThrow(message);
    expect(DURATION_PATTERN.test(text)).toBe(false);
  });
});

describe('flag value types', () => {
  const Schema = durationFlag(100, 60_000);
  it('durationFlag bounds the value and says so in the unit of the bound', () => {
    expect(Schema.parse('1m')).toBe(60_000);
    expect(Schema.safeParse('50ms').error?.issues[0]?.message).toBe('expected at least 100ms');
    expect(Schema.safeParse('2m').error?.issues[0]?.message).toBe('expected at most 1m00s');
  });

  it('parseFlagValues names every bad flag in one UsageError', () => {
    const s = z.object({ deadline: durationFlag(), concurrency: countFlag(1), port: portFlag() });
    const bad = { deadline: '90', concurrency: '0', port: '70000' };
    expect(() => parseFlagValues(s, bad)).toThrow(UsageError);
    expect(() => parseFlagValues(s, bad)).toThrow(
      "--deadline: expected a duration such as 1h30m, 90s or 250ms, got '90' (no unit: write 90s for seconds); " +
        '--concurrency: expected at least 1; --port: expected a port at most 65535',
    );
    expect(parseFlagValues(s, { deadline: '1h30m', concurrency: '3', port: '8080' })).toEqual({
      deadline: 5_400_000,
      concurrency: 3,
      port: 8080,
    });
  });
});

const USAGE = `Usage: thing [flags]
  --state-dir DIR        a directory
  --delivery restart|file   choices
  --gateway-cmd "CMD ARGS"  a quoted phrase
  --patchable VAR,...    a list
  --enable-chat-completions enable it (one space before the description)
  --concurrency N, --max-unavailable N, --paused
                         several on one line
  -o, --output text|json   output
  -h, --help             help
Deprecated:
  --stop-timeout-ms N    use --stop-timeout
  --stop-timeout DUR     grace period
  (not a flag: --kube in prose)
`;

describe('flags declared by the usage text', () => {
  it('reads string, boolean and short flags from the flag lines only', () => {
    expect(optionsFromUsage(USAGE)).toEqual({
      'state-dir': { type: 'string' },
      delivery: { type: 'string' },
      'gateway-cmd': { type: 'string' },
      patchable: { type: 'string' },
      'enable-chat-completions': { type: 'boolean' },
      concurrency: { type: 'string' },
      'max-unavailable': { type: 'string' },
      paused: { type: 'boolean' },
      output: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
      'stop-timeout-ms': { type: 'string' },
      'stop-timeout': { type: 'string' },
    });
  });

  const deprecated = { 'stop-timeout-ms': millisecondsFlag('stop-timeout', 'stop-timeout-ms') };
  const parse = (argv: string[], warnings: string[] = []) =>
    parseCommandLine(argv, USAGE, { command: 'thing', deprecated, warn: (t) => warnings.push(t) });

  it('an unknown flag is a UsageError', () => {
    expect(() => parse(['--kube'])).toThrow(UsageError);
    expect(() => parse(['--kube'])).toThrow(/Unknown option '--kube'/);
  });

  it('a deprecated millisecond flag becomes the duration flag, with a warning naming it', () => {
    const warnings: string[] = [];
    expect(parse(['--stop-timeout-ms', '2500', '-o', 'json'], warnings).values).toEqual({
      'stop-timeout': '2500ms',
      output: 'json',
    });
    expect(warnings).toEqual([
      'keyroll thing: --stop-timeout-ms is deprecated and goes in the next release; use --stop-timeout 2500ms\n',
    ]);
    expect(() => parse(['--stop-timeout-ms', '2s'])).toThrow(
      '--stop-timeout-ms: expected a whole number of milliseconds',
    );
    expect(() => parse(['--stop-timeout-ms', '1', '--stop-timeout', '1s'])).toThrow(
      'give --stop-timeout or --stop-timeout-ms, not both',
    );
    const none: string[] = [];
    expect(parse(['--stop-timeout', '1s'], none).values).toEqual({ 'stop-timeout': '1s' });
    expect(none).toEqual([]);
  });
});
