// Owns the little of RFC 6455 the proxy needs: where frames end in a byte stream, and a close frame.
//
// The proxy relays WebSocket bytes as they come and never decodes messages. To close a client with
// 1012 (service restart) when its gateway stops, it must write the close frame between two frames,
// never inside one, so it follows the frame headers of the gateway → client stream.

/** Tracks frame boundaries in one direction of a WebSocket stream, fed chunk by chunk. */
export class FrameBoundary {
  /** Header bytes collected for the frame being read (at most 14). */
  #header: number[] = [];
  /** Payload bytes still to come for the current frame; -1 while reading a header. */
  #remaining = -1;

  /** True when the bytes fed so far end exactly at a frame boundary. */
  get atBoundary(): boolean {
    return this.#remaining === -1 && this.#header.length === 0;
  }

  /**
   * Consumes `chunk` and returns how many bytes were taken: all of them, or with `stopAtBoundary`
   * only up to the first frame boundary inside the chunk (then `atBoundary` is true).
   */
  feed(chunk: Uint8Array, stopAtBoundary = false): number {
    let i = 0;
    while (i < chunk.length) {
      if (stopAtBoundary && this.atBoundary && i > 0) return i;
      if (this.#remaining > 0) {
        const take = Math.min(this.#remaining, chunk.length - i);
        this.#remaining -= take;
        i += take;
        if (this.#remaining === 0) this.#remaining = -1;
        continue;
      }
      this.#header.push(chunk[i]!);
      i++;
      const need = headerLength(this.#header);
      if (need !== null && this.#header.length === need) {
        const payload = payloadLength(this.#header);
        this.#header = [];
        this.#remaining = payload > 0 ? payload : -1;
      }
    }
    return i;
  }
}

/** Total header length once the first two bytes are known (null before that). */
function headerLength(h: number[]): number | null {
  if (h.length < 2) return null;
  const masked = (h[1]! & 0x80) !== 0;
  const len7 = h[1]! & 0x7f;
  const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
  return 2 + ext + (masked ? 4 : 0);
}

function payloadLength(h: number[]): number {
  const len7 = h[1]! & 0x7f;
  if (len7 < 126) return len7;
  if (len7 === 126) return (h[2]! << 8) | h[3]!;
  // 64-bit length; frames past 2^53 bytes do not occur, so a Number is exact enough.
  let n = 0;
  for (let k = 2; k < 10; k++) n = n * 256 + h[k]!;
  return n;
}

/** An unmasked (server → client) close frame with `code` and a short ASCII reason. */
export function closeFrame(code: number, reason = ''): Buffer {
  const text = Buffer.from(reason.slice(0, 120), 'utf8');
  const frame = Buffer.alloc(4 + text.length);
  frame[0] = 0x88; // FIN + opcode 8 (close)
  frame[1] = 2 + text.length;
  frame.writeUInt16BE(code, 2);
  text.copy(frame, 4);
  return frame;
}

/** 1012: the server is restarting; the client may reconnect. */
export const CLOSE_SERVICE_RESTART = 1012;
