// A WebSocket that reconnects with jittered exponential backoff and reports its state.
// 1012 (the server restarts, or drains) reconnects at once: the session is waiting in the store.
export class Socket {
  // `path`: a string, or a function giving it at each connect (so a resume token can be added).
  // `finalCodes`: close codes after which the socket does not reconnect by itself, each with what
  // to do instead (the state becomes `ended`).
  constructor(path, { onMessage, onState, onOpen, finalCodes = {} }) {
    this.path = path; this.onMessage = onMessage; this.onState = onState; this.onOpen = onOpen;
    this.finalCodes = finalCodes;
    this.attempt = 0; this.ws = null; this.stopped = false;
  }
  connect() {
    this.stopped = false;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.onState(this.attempt ? 'reconnecting' : 'connecting');
    const path = typeof this.path === 'function' ? this.path() : this.path;
    const ws = new WebSocket(`${proto}//${location.host}${path}`);
    this.ws = ws;
    ws.onopen = () => { this.attempt = 0; this.onState('connected'); this.onOpen && this.onOpen(); };
    ws.onmessage = (ev) => { try { this.onMessage(JSON.parse(ev.data)); } catch (e) { console.error(e); } };
    ws.onclose = (ev) => {
      if (this.ws !== ws || this.stopped) return;
      if (this.finalCodes[ev.code]) {
        this.attempt = 0; this.onState('ended', ev.code, ev.reason); this.finalCodes[ev.code](ev);
        return;
      }
      this.attempt += 1;
      // A restarting server (1012) is back in moments: the first retry goes at once (a little
      // jitter, so a class does not arrive in one burst).
      const first = ev.code === 1012 && this.attempt === 1;
      const delay = first ? Math.random() * 250 : Math.min(500 * 2 ** (this.attempt - 1), 10000) * (0.75 + Math.random() / 2);
      this.onState('reconnecting', ev.code, ev.reason, delay);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }
  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(JSON.stringify(obj)); return true; }
    return false;
  }
  close() { this.stopped = true; clearTimeout(this.timer); if (this.ws) this.ws.close(1000); }
}
