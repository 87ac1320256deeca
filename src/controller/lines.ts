// Owns splitting a child's output into lines for the log, holding at most `maxLength` characters
// of any line. readline would buffer a whole line before it could be cut, so a gateway that
// printed a megabyte without a newline would cost the controller a megabyte; here the rest of an
// overlong line is dropped as it arrives.

/**
 * Calls `onLine` for every line of `stream` (decoded as UTF-8; `\n` or `\r\n` ends a line; a last
 * line without a newline counts). A line longer than `maxLength` is cut to `maxLength` characters
 * and reported once, with `cut` true, when its newline arrives.
 */
export function onLines(
  stream: NodeJS.ReadableStream,
  maxLength: number,
  onLine: (line: string, cut: boolean) => void,
): void {
  // At most maxLength + 1 characters are held: the one past the bound may be the '\r' of '\r\n'.
  let held = '';
  let dropped = false;
  const emit = () => {
    const line = !dropped && held.endsWith('\r') ? held.slice(0, -1) : held;
    const cut = dropped || line.length > maxLength;
    onLine(cut ? line.slice(0, maxLength) : line, cut);
    held = '';
    dropped = false;
  };
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf('\n', from);
      const end = nl < 0 ? chunk.length : nl;
      const room = maxLength + 1 - held.length;
      if (end - from > room) dropped = true;
      if (room > 0) held += chunk.slice(from, from + Math.min(room, end - from));
      if (nl < 0) return;
      emit();
      from = nl + 1;
    }
  });
  stream.on('end', () => {
    if (held.length > 0 || dropped) emit();
  });
}
