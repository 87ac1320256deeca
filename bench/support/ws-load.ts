// Owns the benchmark's WebSocket load: sockets that send a message at a fixed pace and count what
// comes back (the stand-in gateway echoes every message), reconnecting after a close (a restart
// closes them with 1012), until stopped.

export interface WsLoad {
  /** Sockets open right now. */
  open(): number;
  /** Closes every socket and stops reconnecting. */
  stop(): Promise<{ opened: number; sent: number; received: number; closes: Record<string, number> }>;
}

/** `n` sockets to ws://127.0.0.1:`port``path`, each sending `payload` every `everyMs`. */
export function startWsLoad(port: number, path: string, n: number, payload: string, everyMs: number): WsLoad {
  let running = true;
  let opened = 0;
  let sent = 0;
  let received = 0;
  const closes: Record<string, number> = {};
  const sockets = new Set<WebSocket>();
  const loops = Array.from({ length: n }, async () => {
    while (running) {
      await new Promise<void>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`);
        let timer: NodeJS.Timeout | undefined;
        ws.onopen = () => {
          opened++;
          sockets.add(ws);
          timer = setInterval(() => {
            if (ws.readyState !== WebSocket.OPEN) return;
            ws.send(payload);
            sent++;
          }, everyMs);
        };
        ws.onmessage = () => {
          received++;
        };
        ws.onerror = () => {};
        ws.onclose = (e) => {
          clearInterval(timer);
          sockets.delete(ws);
          closes[String(e.code)] = (closes[String(e.code)] ?? 0) + 1;
          resolve();
        };
      });
      if (running) await new Promise((r) => setTimeout(r, 100));
    }
  });
  return {
    open: () => sockets.size,
    stop: async () => {
      running = false;
      for (const ws of sockets) ws.close(1000);
      await Promise.all(loops);
      return { opened, sent, received, closes };
    },
  };
}
