// A WebSocket that reconnects with exponential backoff and reports its state.
export class Socket {
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
    const ws = new WebSocket(`${proto}//${location.host}${this.path}`);
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
      const delay = Math.min(500 * 2 ** (this.attempt - 1), 10000) * (0.75 + Math.random() / 2);
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
