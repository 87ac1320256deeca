// Line splitting of a child's output: chunk boundaries, CRLF, multi-byte characters split across
// chunks, and the bound on how much of an overlong line is held and logged.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { onLines } from '../../src/controller/lines.ts';

async function split(chunks: (string | Buffer)[], maxLength = 10): Promise<[string, boolean][]> {
  const stream = new PassThrough();
  const got: [string, boolean][] = [];
  onLines(stream, maxLength, (line, cut) => got.push([line, cut]));
  const ended = new Promise((r) => stream.on('end', r));
  for (const c of chunks) stream.write(c);
  stream.end();
  await ended;
  return got;
}

describe('onLines', () => {
  it('splits on \\n and \\r\\n across chunk boundaries, and keeps a last line without a newline', async () => {
    expect(await split(['ab', 'c\nde\r', '\n\nlast'])).toEqual([
      ['abc', false],
      ['de', false],
      ['', false],
      ['last', false],
    ]);
  });

  it('decodes a multi-byte character split between two chunks', async () => {
    const bytes = Buffer.from('ké\n');
    expect(await split([bytes.subarray(0, 2), bytes.subarray(2)])).toEqual([['ké', false]]);
  });

  it('cuts a line at maxLength, drops the rest as it arrives, and goes on with the next line', async () => {
    const long = 'x'.repeat(25);
    expect(await split([long.slice(0, 7), long.slice(7), '\nnext\n'])).toEqual([
      ['x'.repeat(10), true],
      ['next', false],
    ]);
  });

  it('a line of exactly maxLength ending in \\r\\n is not cut; one character more is', async () => {
    expect(await split(['0123456789\r\n', '0123456789a\r\n', '0123456789\r'])).toEqual([
      ['0123456789', false],
      ['0123456789', true],
      ['0123456789', false],
    ]);
  });

  it('an overlong last line without a newline is reported cut', async () => {
    expect(await split(['y'.repeat(40)])).toEqual([['y'.repeat(10), true]]);
  });
});
