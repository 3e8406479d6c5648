"""Webhook notifications: access-request events POSTed as JSON to team channels, never blocking.

`WebhookNotifier.notify()` only puts a delivery on a bounded per-webhook queue; worker tasks
deliver it with httpx (TLS verified against the system's CA store, proxies from the environment:
HTTPS_PROXY, HTTP_PROXY, NO_PROXY) and retry with exponential backoff. Each webhook has its own
queue, workers and connection pool, so a dead or hanging URL only ever delays (and at worst drops)
its own notifications. URLs are logged as scheme://host:port/path with the last path segment, userinfo
and query removed, and header values are never logged: those are where webhook secrets live.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from bastion import __version__

__all__ = ["DEFAULT_EVENTS", "Webhook", "WebhookNotifier", "redact_url"]

DEFAULT_EVENTS: frozenset[str] = frozenset(
    {"request.created", "request.approved", "request.denied", "request.revoked"}
)

_MAX_BACKOFF = 60.0
# How long a webhook removed by replace() may keep delivering what was queued before the reload.
_RETIRE_GRACE = 2.0
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Framing headers are ours: a configured value would corrupt or smuggle the request.
_RESERVED = frozenset({"host", "content-length", "connection", "transfer-encoding"})


def redact_url(url: str) -> str:
    """Return scheme://host:port/path fit for logs: no userinfo, query or last path segment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    path = parts.path.rstrip("/")
    # Slack, Mattermost and Discord put the webhook's secret token in the last path segment.
    shown = path.rpartition("/")[0] + "/***" if path else "/"
    return f"{parts.scheme}://{host}:{port}{shown}"


@dataclass(frozen=True, repr=False)
class Webhook:
    """One webhook URL, the event kinds it receives and how hard to try delivering to it."""

    url: str
    events: frozenset[str] = frozenset()
    timeout: float = 5.0
    max_attempts: int = 5
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        """Refuse what could never be sent; messages never quote the URL or header values."""
        if not self.url.isascii() or any(ch.isspace() or ord(ch) < 0x20 for ch in self.url):
            raise ValueError("webhook url must be ASCII without spaces (percent-encode the rest)")
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - evaluated only to validate the port
        except ValueError:
            raise ValueError("webhook url is malformed (check the host and port)") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError("webhook url must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("webhook url has no host")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("webhook timeout must be a positive number of seconds")
        if self.max_attempts < 1:
            raise ValueError("webhook max_attempts must be at least 1")
        object.__setattr__(self, "events", frozenset(self.events))
        for name, value in self.headers:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"webhook header name {name!r} is not a valid HTTP header name")
            if name.lower() in _RESERVED:
                raise ValueError(f"webhook header {name!r} is set by the bastion itself")
            if _BAD_VALUE.search(value) or not _latin1(value):
                raise ValueError(f"webhook header {name!r} has a value that cannot be sent in HTTP")

    def wants(self, kind: str) -> bool:
        """Whether notifications of this event kind go to this webhook."""
        return kind in (self.events or DEFAULT_EVENTS)

    def __repr__(self) -> str:
        """Describe the webhook without its secrets (header values, userinfo, query, token)."""
        names = [name for name, _ in self.headers]
        return (
            f"Webhook(url={redact_url(self.url)!r}, events={sorted(self.events)!r}, "
            f"timeout={self.timeout!r}, max_attempts={self.max_attempts!r}, "
            f"headers=<{len(names)} redacted: {', '.join(names)}>)"
        )


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _slack_text(text: str) -> str:
    """One line, with the three characters Slack requires escaped."""
    # Escaping also stops a user-written reason from pinging <!channel> or forging a link.
    line = " ".join(text.split())
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class _Delivery:
    kind: str
    body: bytes


class _Channel:
    """One webhook's queue, workers and connections, so a dead URL only ever delays its own
    notifications (a shared pool would let its hanging connections starve the others)."""

    def __init__(self, webhook: Webhook, queue_size: int) -> None:
        self.webhook = webhook
        self.label = redact_url(webhook.url)
        self.queue: asyncio.Queue[_Delivery] = asyncio.Queue(queue_size)
        self.workers: list[asyncio.Task[None]] = []
        self.in_flight = 0
        self.client: httpx.AsyncClient | None = None

    async def close_client(self) -> None:
        """Close the connection pool (the workers are gone)."""
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()


class WebhookNotifier:
    """Sends event notifications to webhooks in the background; callers never wait or see errors.

    Notifications given before `start()` wait in the queues and go out once it is called.
    `replace()`, `join()` and `stop()` belong to the event loop the notifier was started on; once
    started, `notify()` may also be called from other threads.
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        *,
        backoff: float = 1.0,
        logger: logging.Logger | None = None,
        queue_size: int = 1000,
        concurrency: int = 4,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not (math.isfinite(backoff) and backoff >= 0):
            raise ValueError("backoff must be a non-negative number of seconds")
        if queue_size < 1 or concurrency < 1:
            raise ValueError("queue_size and concurrency must be at least 1")
        self._backoff = backoff
        self._log = logger or logging.getLogger(__name__)
        self._queue_size = queue_size
        self._concurrency = concurrency
        self._ssl = ssl_context
        self._channels: dict[Webhook, _Channel] = self._build(webhooks, {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def webhooks(self) -> tuple[Webhook, ...]:
        """The webhooks currently configured."""
        return tuple(self._channels)

    def notify(self, kind: str, text: str, payload: dict[str, Any]) -> None:
        """Queue `{"text": text, "event": kind, **payload}` for every webhook wanting `kind`."""
        try:
            if not any(hook.wants(kind) for hook in list(self._channels)):
                return
            document = {"text": _slack_text(text), "event": kind, **payload}
            # Encoding now snapshots the payload: the caller may mutate its dict afterwards.
            body = json.dumps(document, default=str, ensure_ascii=False, separators=(",", ":"))
            delivery = _Delivery(kind, body.encode())
            loop = self._loop
            if loop is not None and _running_loop() is not loop:
                # asyncio.Queue is not thread-safe: let the notifier's own loop do the put.
                loop.call_soon_threadsafe(self._enqueue, delivery)
            else:
                self._enqueue(delivery)
        except Exception:
            self._log.exception("webhook notification %r could not be queued", kind)

    def start(self) -> None:
        """Start the delivery workers on the running event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        self._stopped = False
        for channel in self._channels.values():
            self._spawn(channel)

    def replace(self, webhooks: Sequence[Webhook]) -> None:
        """Swap in a reloaded configuration; unchanged webhooks keep their queued notifications."""
        old = self._channels
        self._channels = self._build(webhooks, old)
        removed = [ch for hook, ch in old.items() if hook not in self._channels]
        added = sum(1 for hook in self._channels if hook not in old)
        if self._loop is not None and not self._stopped:
            for channel in self._channels.values():
                if not channel.workers:
                    self._spawn(channel)
            for channel in removed:
                task = self._loop.create_task(self._retire(channel))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        self._log.info("webhooks reloaded: %d configured, %d added, %d removed",
                       len(self._channels), added, len(removed))

    async def join(self) -> None:
        """Wait until every queued notification is delivered or given up on (after start())."""
        while True:
            channels = list(self._channels.values())
            await asyncio.gather(*(ch.queue.join() for ch in channels), *list(self._retiring))
            # A replace() during the wait may have brought new channels with queued work.
            if list(self._channels.values()) == channels and not self._retiring:
                return

    async def stop(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 - a grace period, not a deadline
        """Let queued deliveries finish for up to `timeout` seconds, then cancel the rest."""
        if self._loop is None or self._stopped:
            return
        self._stopped = True
        channels = list(self._channels.values())
        drain = [asyncio.ensure_future(ch.queue.join()) for ch in channels]
        retiring = list(self._retiring)
        try:
            if drain or retiring:
                await asyncio.wait([*drain, *retiring], timeout=timeout)
        finally:
            undelivered = sum(ch.queue.qsize() + ch.in_flight for ch in channels)
            tasks = [*drain, *retiring, *(w for ch in channels for w in ch.workers)]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for channel in channels:
                channel.workers = []
                await channel.close_client()
                # Fresh queues: items left in the old ones would keep join() waiting forever.
                channel.queue = asyncio.Queue(self._queue_size)
                channel.in_flight = 0
            self._loop = None
            if undelivered:
                self._log.warning("webhooks: %d notification(s) not delivered at shutdown",
                                  undelivered)

    def _build(
        self, webhooks: Iterable[Webhook], old: dict[Webhook, _Channel]
    ) -> dict[Webhook, _Channel]:
        channels: dict[Webhook, _Channel] = {}
        for hook in webhooks:
            if hook not in channels:
                channels[hook] = old.get(hook) or _Channel(hook, self._queue_size)
        return channels

    def _spawn(self, channel: _Channel) -> None:
        assert self._loop is not None
        channel.workers = [
            self._loop.create_task(self._work(channel), name=f"webhook {channel.label}")
            for _ in range(self._concurrency)
        ]

    def _enqueue(self, delivery: _Delivery) -> None:
        if self._stopped:
            self._log.debug("webhooks stopped: %s notification dropped", delivery.kind)
            return
        for channel in self._channels.values():
            if not channel.webhook.wants(delivery.kind):
                continue
            try:
                channel.queue.put_nowait(delivery)
            except asyncio.QueueFull:
                self._log.warning("webhook %s: queue full (%d waiting), %s notification dropped",
                                  channel.label, channel.queue.qsize(), delivery.kind)

    async def _retire(self, channel: _Channel) -> None:
        """Give a removed webhook a moment to send what was queued for it, then stop it."""
        try:
            await asyncio.wait_for(channel.queue.join(), _RETIRE_GRACE)
        except TimeoutError:
            self._log.warning("webhook %s removed: %d queued notification(s) dropped",
                              channel.label, channel.queue.qsize() + channel.in_flight)
        finally:
            for worker in channel.workers:
                worker.cancel()
            await asyncio.gather(*channel.workers, return_exceptions=True)
            channel.workers = []
            await channel.close_client()

    async def _work(self, channel: _Channel) -> None:
        while True:
            delivery = await channel.queue.get()
            channel.in_flight += 1
            try:
                await self._deliver(channel, delivery)
            except Exception:
                # A bug in one delivery must not kill the worker that serves the rest.
                self._log.exception("webhook %s: %s delivery failed unexpectedly",
                                    channel.label, delivery.kind)
            finally:
                channel.in_flight -= 1
                channel.queue.task_done()

    async def _deliver(self, channel: _Channel, delivery: _Delivery) -> None:
        hook = channel.webhook
        problem = ""
        for attempt in range(1, hook.max_attempts + 1):
            try:
                status = await self._post(channel, delivery.body)
            except Exception as exc:  # every failure of an attempt is worth a retry
                problem = _describe(exc)
            else:
                if 200 <= status < 300:
                    self._log.debug("webhook %s: %s delivered (HTTP %d, attempt %d)",
                                    channel.label, delivery.kind, status, attempt)
                    return
                problem = f"HTTP {status}"
            if attempt == hook.max_attempts:
                break
            delay = min(self._backoff * 2.0 ** min(attempt - 1, 32), _MAX_BACKOFF)
            self._log.info("webhook %s: %s attempt %d/%d failed (%s); retrying in %.2fs",
                           channel.label, delivery.kind, attempt, hook.max_attempts, problem, delay)
            await asyncio.sleep(delay)
        self._log.warning("webhook %s: gave up on %s notification after %d attempt(s) (last: %s)",
                          channel.label, delivery.kind, hook.max_attempts, problem)

    async def _post(self, channel: _Channel, body: bytes) -> int:
        """POST once and return the HTTP status; raise on connection failure or timeout."""
        hook = channel.webhook
        client = channel.client or await self._client(channel)
        url, headers, auth = _request(hook)
        # httpx's timeout bounds each phase; the webhook's bounds the whole attempt, so a
        # receiver that trickles its answer cannot hold a worker longer.
        async with asyncio.timeout(hook.timeout):
            # The body of the answer is never read: the status is all that counts.
            async with client.stream("POST", url, content=body, headers=headers,
                                     auth=auth or httpx.USE_CLIENT_DEFAULT) as response:
                return response.status_code

    async def _client(self, channel: _Channel) -> httpx.AsyncClient:
        if self._ssl is None:
            # The system's CA store (and SSL_CERT_FILE), read off the event loop. Two first
            # deliveries racing here build two contexts, which is harmless.
            self._ssl = await asyncio.to_thread(ssl.create_default_context)
        if channel.client is None:
            channel.client = httpx.AsyncClient(
                verify=self._ssl, timeout=channel.webhook.timeout, follow_redirects=False,
                limits=httpx.Limits(max_connections=self._concurrency), trust_env=True)
        return channel.client


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _request(hook: Webhook) -> tuple[httpx.URL, list[tuple[str, str]], httpx.BasicAuth | None]:
    """The URL without its userinfo, and the headers: user:password@ in the URL means HTTP Basic
    (as curl and browsers treat it) unless an Authorization header is configured."""
    url = httpx.URL(hook.url)
    configured = {name.lower() for name, _ in hook.headers}
    headers = [("User-Agent", f"bastion/{__version__}"), ("Connection", "close")]
    if "content-type" not in configured:
        headers.append(("Content-Type", "application/json"))
    auth = None
    if url.userinfo and "authorization" not in configured:
        auth = httpx.BasicAuth(url.username, url.password)
    return url.copy_with(username=None, password=None), [*headers, *hook.headers], auth


def _describe(exc: Exception) -> str:
    """A short reason for logs: the root cause's kind and text (host and port at most, never the
    URL: httpx's own messages are left out, they may quote it)."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.LocalProtocolError):
        return "not an HTTP response"
    root: BaseException = exc
    while (cause := root.__cause__ or root.__context__) is not None:
        root = cause
    if isinstance(root, httpx.HTTPError):
        return type(root).__name__
    text = str(root)
    return f"{type(root).__name__}: {text}" if text else type(root).__name__
