"""Failure throttling for sign-in and display pairing: an in-memory sliding window.

Each key (``login:user:NAME``, ``login:addr:IP``, ``pair:addr:IP``) keeps the times of its
recent failures. Once a key holds `limit` failures inside `window` seconds, it is blocked until
the oldest of them ages out, and `retry_after` says how long that is (for a `Retry-After`
header). The window lives in one process: behind a load balancer each process counts on its
own, which bounds guessing per process, not per trust (a Redis-backed limiter is the next step).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import HTTPConnection

log = logging.getLogger("whiteboard.throttle")

#: Keys kept at most; past this the oldest-touched are forgotten (memory stays bounded).
MAX_KEYS = 100_000


class SlidingWindow:
    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may try again, or None when it is not blocked."""
        now = self.clock()
        times = self._recent(key, now)
        if times is None or len(times) < self.limit:
            return None
        return max(1, math.ceil(times[-self.limit] + self.window - now))

    def blocked(self, keys: Iterable[str]) -> int | None:
        """The longest wait among `keys`, or None when none is blocked."""
        waits = [w for w in (self.retry_after(k) for k in keys) if w is not None]
        return max(waits) if waits else None

    def fail(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= MAX_KEYS:
                    self._failures.pop(next(iter(self._failures)))
                times = self._failures[key] = deque()
            times.append(now)
            # Only the newest `limit` matter for blocking; older ones can go.
            while len(times) > self.limit:
                times.popleft()

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)


LOGIN_LIMIT, LOGIN_WINDOW = 10, 15 * 60.0
PAIR_LIMIT, PAIR_WINDOW = 10, 10 * 60.0


class Window:
    """A failure window as the routes use it. Kept in this process by default; shared by
    every process through Redis when `WHITEBOARD_REDIS_URL` is set, so N replicas behind a
    load balancer still allow 10 failures in all, not 10 each. If Redis cannot be reached the
    count falls back to this process's own window (still a limit, never none)."""

    def __init__(self, name: str, limit: int, seconds: float, redis_url: str | None, prefix: str) -> None:
        self.local = SlidingWindow(limit, seconds)
        self.shared: Any = None
        if redis_url:
            from limits import RateLimitItemPerSecond
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import MovingWindowRateLimiter

            storage = RedisStorage(
                f"async+{redis_url}",
                implementation="redispy",
                key_prefix=f"{prefix}:limits:{name}",
                socket_connect_timeout=1.0,
                socket_timeout=1.0,
            )
            self.shared = MovingWindowRateLimiter(storage)
            self.item = RateLimitItemPerSecond(limit, int(seconds))

    async def blocked(self, keys: Iterable[str]) -> int | None:
        waits = [w for w in [await self.retry_after(k) for k in keys] if w is not None]
        return max(waits) if waits else None

    async def retry_after(self, key: str) -> int | None:
        if self.shared is not None:
            try:
                if await self.shared.test(self.item, key):
                    return None
                stats = await self.shared.get_window_stats(self.item, key)
                return max(1, math.ceil(float(stats.reset_time) - time.time()))
            except Exception:
                log.warning("shared throttle unreachable; counting in this process")
        return self.local.retry_after(key)

    async def fail(self, *keys: str) -> None:
        self.local.fail(*keys)
        if self.shared is not None:
            try:
                for key in keys:
                    await self.shared.hit(self.item, key)
            except Exception:
                log.warning("shared throttle unreachable; counting in this process")

    async def reset(self, key: str) -> None:
        self.local.reset(key)
        if self.shared is not None:
            try:
                await self.shared.clear(self.item, key)
            except Exception:
                log.warning("shared throttle unreachable; counting in this process")


def window(conn: HTTPConnection, name: str, limit: int, seconds: float) -> Window:
    """The app's window called `name`, made on first use."""
    state = conn.app.state
    windows: dict[str, Window] | None = getattr(state, "throttle_windows", None)
    if windows is None:
        windows = {}
        state.throttle_windows = windows
    if name not in windows:
        settings = state.settings
        windows[name] = Window(name, limit, seconds, settings.redis_url, settings.redis_prefix)
    return windows[name]


def login_window(conn: HTTPConnection) -> Window:
    return window(conn, "login", LOGIN_LIMIT, LOGIN_WINDOW)


def pairing_window(conn: HTTPConnection) -> Window:
    return window(conn, "pairing", PAIR_LIMIT, PAIR_WINDOW)


class TokenBucket:
    """Writes per caller: `rate` a second on average, bursts of up to `burst`.

    A runaway script or a stuck client retrying in a loop gets 429 with Retry-After instead of
    starving every ward's writes; people and the feed stay far below it.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, as of)

    def take(self, key: str) -> int | None:
        """Spend one write for `key`; None when allowed, else the seconds to wait."""
        now = self.clock()
        tokens, since = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - since) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.rate))
        if len(self._buckets) >= MAX_KEYS and key not in self._buckets:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = (tokens - 1, now)
        return None
