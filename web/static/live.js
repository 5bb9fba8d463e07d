// @ts-check
/**
 * The live client every screen shares: one WebSocket per ward, kept in step with the server.
 *
 * - Frames arrive in `seq` order: a `snapshot` sets the board, each `change` is one more than
 *   the last; a duplicate (seq already seen) is dropped; a gap (a change or heartbeat ahead of
 *   us) reconnects at once with `since=LAST` so the server replays what we missed.
 * - A closed socket reconnects with jittered exponential backoff: 0.5 s doubling to a 10 s
 *   cap, each wait ±50 %.
 * - A watchdog: when no frame has arrived for 15 s the screen says "Not live since HH:MM"
 *   (Europe/London, the time of the last frame), and an open-looking but silent socket is
 *   dropped and reopened (the server sends a heartbeat at least every 10 s).
 * A screen never shows old state without saying so.
 */

export const STALE_AFTER_MS = 15000;
export const BACKOFF_START_MS = 500;
export const BACKOFF_CAP_MS = 10000;
const WATCHDOG_EVERY_MS = 1000;

const LONDON_TIME = new Intl.DateTimeFormat("en-GB", {
  timeZone: "Europe/London",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const LONDON_DATE = new Intl.DateTimeFormat("en-CA", {
  timeZone: "Europe/London",
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
});

/** HH:MM in ward local time. @param {Date | number} when */
export function londonTime(when) {
  return LONDON_TIME.format(when);
}

/** YYYY-MM-DD in ward local time. @param {Date | number} when */
export function londonDate(when) {
  return LONDON_DATE.format(when);
}

/**
 * How long to wait before reconnect attempt `attempt` (0, 1, 2…).
 * @param {number} attempt
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** Math.min(attempt, 20));
  return base * (0.5 + random());
}

/**
 * @typedef {{type: "snapshot", ward: string, seq: number, view: string, beds: any[], unplaced: any[]}} SnapshotFrame
 * @typedef {{type: "change", ward: string, seq: number, at: string, bed?: any, unplaced?: any[]}} ChangeFrame
 * @typedef {{live: boolean, lastFrameAt: number}} LiveStatus
 * @typedef {{
 *   ward: string,
 *   view: "display" | "clinical",
 *   onSnapshot: (frame: SnapshotFrame) => void,
 *   onChange: (frame: ChangeFrame) => void,
 *   onStatus?: (status: LiveStatus) => void,
 *   onAuthLost?: (httpStatus: number) => void,
 * }} LiveOptions
 */

export class LiveWard {
  /** @param {LiveOptions} options */
  constructor(options) {
    this.options = options;
    /** @type {number | null} */
    this.lastSeq = null;
    this.lastFrameAt = Date.now();
    this.attempt = 0;
    this.failedOpens = 0;
    this.live = false;
    this.stopped = true;
    /** @type {WebSocket | null} */
    this.socket = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.retryTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.watchdog = null;
  }

  start() {
    this.stopped = false;
    this.lastFrameAt = Date.now();
    this.connect();
    this.watchdog = setInterval(() => this.check(), WATCHDOG_EVERY_MS);
  }

  stop() {
    this.stopped = true;
    if (this.watchdog !== null) clearInterval(this.watchdog);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.drop();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams({ view: this.options.view });
    if (this.lastSeq !== null) params.set("since", String(this.lastSeq));
    return `${scheme}//${location.host}/ws/wards/${encodeURIComponent(this.options.ward)}?${params}`;
  }

  connect() {
    this.retryTimer = null;
    if (this.stopped) return;
    let gotFrame = false;
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      gotFrame = true;
      this.onFrame(String(event.data));
    });
    socket.addEventListener("close", () => {
      if (socket !== this.socket) return;
      this.socket = null;
      if (!gotFrame) this.noteFailedOpen();
      this.reconnect(false);
    });
  }

  /** Forget the current socket (its late events are ignored) and close it. */
  drop() {
    const socket = this.socket;
    this.socket = null;
    if (socket !== null && socket.readyState <= WebSocket.OPEN) {
      try {
        socket.close(4000, "client reconnecting");
      } catch {
        /* already closing */
      }
    }
  }

  /** @param {boolean} now  reconnect at once (a gap) rather than after a backoff */
  reconnect(now) {
    this.drop();
    if (this.stopped || this.retryTimer !== null) return;
    const delay = now && this.attempt === 0 ? 0 : backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** @param {string} text */
  onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.reconnect(false);
      return;
    }
    if (frame.type === "snapshot") {
      this.lastSeq = frame.seq;
      this.options.onSnapshot(frame);
    } else if (frame.type === "change") {
      if (this.lastSeq === null) return this.reconnect(true);
      if (frame.seq <= this.lastSeq) return; // a duplicate: already applied
      if (frame.seq !== this.lastSeq + 1) return this.reconnect(true); // a gap: replay from the log
      this.lastSeq = frame.seq;
      this.options.onChange(frame);
    } else if (frame.type === "heartbeat") {
      if (this.lastSeq === null || frame.seq > this.lastSeq) return this.reconnect(true);
    } else {
      return;
    }
    this.attempt = 0;
    this.failedOpens = 0;
    this.lastFrameAt = Date.now();
    this.setLive(true);
  }

  check() {
    const silent = Date.now() - this.lastFrameAt;
    if (silent < STALE_AFTER_MS) return;
    this.setLive(false);
    // Open but silent past a heartbeat and more: the connection is dead without knowing it.
    if (this.socket !== null && this.socket.readyState === WebSocket.OPEN) this.reconnect(false);
  }

  /** @param {boolean} live */
  setLive(live) {
    this.live = live;
    this.options.onStatus?.({ live, lastFrameAt: this.lastFrameAt });
  }

  /** Sockets that close before a frame may mean we are no longer allowed: ask the API why. */
  noteFailedOpen() {
    this.failedOpens += 1;
    // Ask after the 2nd failure, then every 3rd (the server may have been down at first).
    if (this.failedOpens % 3 !== 2 || !this.options.onAuthLost) return;
    const url = `/api/v1/wards/${encodeURIComponent(this.options.ward)}?view=${this.options.view}`;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => {
        if (response.status === 401 || response.status === 403) this.options.onAuthLost?.(response.status);
      })
      .catch(() => {
        /* the server is down: the banner already says so */
      });
  }
}

/** The "Not live since HH:MM" banner. */
export class StaleBanner {
  /** @param {HTMLElement | null} element */
  constructor(element) {
    this.element = element;
  }

  /** @param {LiveStatus} status */
  update(status) {
    if (!this.element) return;
    if (status.live) {
      this.element.hidden = true;
      this.element.textContent = "";
      document.body.classList.remove("not-live");
    } else {
      this.element.textContent = `Not live since ${londonTime(status.lastFrameAt)}`;
      this.element.hidden = false;
      document.body.classList.add("not-live");
    }
  }
}

/**
 * Watch several wards at once (the trust-wide boards): `onNews` after every snapshot or
 * change, one banner for all (not live while any ward is not).
 * @param {string[]} wards
 * @param {(ward: string, kind: "snapshot" | "change") => void} onNews
 * @param {StaleBanner} banner
 * @param {(httpStatus: number) => void} [onAuthLost]
 */
export function watchWards(wards, onNews, banner, onAuthLost) {
  /** @type {Map<string, LiveStatus>} */
  const statuses = new Map();
  const clients = wards.map((ward) => {
    const client = new LiveWard({
      ward,
      view: "clinical",
      onSnapshot: () => onNews(ward, "snapshot"),
      onChange: () => onNews(ward, "change"),
      onStatus: (status) => {
        statuses.set(ward, status);
        const stale = [...statuses.values()].filter((s) => !s.live);
        banner.update(
          stale.length === 0
            ? { live: true, lastFrameAt: Date.now() }
            : { live: false, lastFrameAt: Math.min(...stale.map((s) => s.lastFrameAt)) },
        );
      },
      onAuthLost,
    });
    client.start();
    return client;
  });
  return () => clients.forEach((c) => c.stop());
}
