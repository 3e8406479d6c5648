"""Webhook notifier against real HTTP servers on 127.0.0.1: payloads, retries, isolation, stop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.notify import DEFAULT_EVENTS, Webhook, WebhookNotifier, redact_url

# An answer is a status code, raw response bytes, or None to hang without ever responding.
Answer = int | bytes | None
# Upper bound for waits that should end far sooner; only a broken notifier runs into it.
WAIT = 5.0


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Server:
    """A tiny HTTP/1.1 server that records each request and answers from a script."""

    answer: Callable[[int], Answer]
    ssl: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    open_connections: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, path: str = "/hook") -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def wait_for(self, count: int) -> None:
        """Wait until `count` requests have arrived."""
        async with asyncio.timeout(WAIT):
            while len(self.requests) < count:
                self._changed.clear()
                await self._changed.wait()

    async def wait_closed_connections(self) -> None:
        async with asyncio.timeout(WAIT):
            while self.open_connections:
                self._changed.clear()
                await self._changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.open_connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            index = len(self.requests)
            self.requests.append(Request(method, target, headers, json.loads(body)))
            self._changed.set()
            answer = self.answer(index)
            if answer is None:
                await reader.read()  # hang until the client goes away
            else:
                if isinstance(answer, int):
                    answer = (f"HTTP/1.1 {answer} Whatever\r\nContent-Length: 2\r\n"
                              "Connection: close\r\n\r\nok").encode()
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self._writers.discard(writer)
            self.open_connections -= 1
            self._changed.set()
            self._handlers.discard(task)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)


class Records(logging.Handler):
    """Collects the notifier's log records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int | None = None) -> list[str]:
        return [r.getMessage() for r in self.records if level is None or r.levelno == level]

    def text(self) -> str:
        formatter = logging.Formatter("%(levelname)s %(message)s")
        return "\n".join(formatter.format(r) for r in self.records)


Serve = Callable[..., Awaitable[Server]]
MakeNotifier = Callable[..., WebhookNotifier]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[Server] = []

    async def start(answer: Callable[[int], Answer] = lambda _: 200,
                    tls: ssl.SSLContext | None = None) -> Server:
        server = Server(answer, tls)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
def logs() -> Iterator[tuple[logging.Logger, Records]]:
    logger = logging.getLogger("test.notify")
    logger.setLevel(logging.DEBUG)
    records = Records()
    logger.addHandler(records)
    yield logger, records
    logger.removeHandler(records)


@pytest.fixture
async def make_notifier(
    serve: Serve, logs: tuple[logging.Logger, Records]
) -> AsyncIterator[MakeNotifier]:
    """Build notifiers logging to `logs`; stopped before the servers close."""
    made: list[WebhookNotifier] = []

    def make(webhooks: list[Webhook], *, start: bool = True, **kwargs: Any) -> WebhookNotifier:
        kwargs.setdefault("backoff", 0.01)
        notifier = WebhookNotifier(webhooks, logger=logs[0], **kwargs)
        if start:
            notifier.start()
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        await notifier.stop(timeout=0)


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_payload_text_and_headers_arrive(serve: Serve, make_notifier: MakeNotifier) -> None:
    server = await serve()
    hook = Webhook(url=server.url("/hooks/abc?channel=ops"),
                   headers=(("Authorization", "Bearer tok"), ("X-Team", "ops")))
    notifier = make_notifier([hook])

    notifier.notify("request.created", "alice asks for <prod-db> & more\nsecond  line",
                    {"request_id": 7, "user": "alice", "when": dt.date(2026, 1, 2)})
    # notify() only queues: nothing can have been sent before the caller yields to the loop.
    assert server.requests == []

    await notifier.join()
    [request] = server.requests
    assert request.method == "POST"
    assert request.target == "/hooks/abc?channel=ops"
    assert request.body == {
        "text": "alice asks for &lt;prod-db&gt; &amp; more second line",
        "event": "request.created",
        "request_id": 7,
        "user": "alice",
        "when": "2026-01-02",
    }
    assert request.headers["content-type"] == "application/json"
    assert request.headers["connection"] == "close"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["authorization"] == "Bearer tok"
    assert request.headers["x-team"] == "ops"


async def test_only_subscribed_events_are_sent(serve: Serve, make_notifier: MakeNotifier) -> None:
    defaults, sessions = await serve(), await serve()
    notifier = make_notifier([
        Webhook(url=defaults.url()),
        Webhook(url=sessions.url(), events=frozenset({"session.started", "request.denied"})),
    ])

    for kind in (*sorted(DEFAULT_EVENTS), "session.started", "recording.sealed"):
        notifier.notify(kind, kind, {})
    await notifier.join()

    assert sorted(r.body["event"] for r in defaults.requests) == sorted(DEFAULT_EVENTS)
    assert sorted(r.body["event"] for r in sessions.requests) == ["request.denied",
                                                                   "session.started"]


async def test_retries_500_until_success(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    server = await serve(lambda i: 500 if i < 2 else 200)
    notifier = make_notifier([Webhook(url=server.url())], backoff=0.05)

    notifier.notify("request.approved", "approved", {"request_id": 1})
    await notifier.join()

    assert len(server.requests) == 3
    assert all(r.body["request_id"] == 1 for r in server.requests)
    retries = logs[1].messages(logging.INFO)
    assert [m for m in retries if "HTTP 500" in m and "retrying" in m] == [retries[0], retries[1]]
    assert "attempt 1/5" in retries[0] and "retrying in 0.05s" in retries[0]
    assert "attempt 2/5" in retries[1] and "retrying in 0.10s" in retries[1]
    assert not logs[1].messages(logging.WARNING)


async def test_unreachable_url_is_retried_then_given_up(
    make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    port = closed_port()
    notifier = make_notifier([Webhook(url=f"http://127.0.0.1:{port}/x", max_attempts=4)])

    notifier.notify("request.revoked", "revoked", {})
    await notifier.join()

    retries = [m for m in logs[1].messages(logging.INFO) if "retrying" in m]
    assert [f"attempt {n}/4" in m for n, m in enumerate(retries, 1)] == [True] * 3
    [gave_up] = logs[1].messages(logging.WARNING)
    assert "gave up on request.revoked notification after 4 attempt(s)" in gave_up
    assert f"http://127.0.0.1:{port}/***" in gave_up


async def test_non_http_answer_and_interim_responses(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    garbage = await serve(lambda _: b"SSH-2.0-OpenSSH\r\n")
    interim = await serve(lambda _: b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                                    b"HTTP/1.1 204 No Content\r\n\r\n")
    notifier = make_notifier([Webhook(url=garbage.url(), max_attempts=2),
                              Webhook(url=interim.url(), max_attempts=2)])

    notifier.notify("request.created", "x", {})
    await notifier.join()

    assert len(garbage.requests) == 2
    assert len(interim.requests) == 1
    [gave_up] = logs[1].messages(logging.WARNING)
    assert garbage.url("/***").replace("/***", "") in gave_up and "not an HTTP response" in gave_up


async def test_hanging_webhook_does_not_delay_healthy_one(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    hanging = await serve(lambda _: None)
    healthy = await serve()
    notifier = make_notifier([Webhook(url=hanging.url(), timeout=30),
                              Webhook(url=healthy.url(), timeout=30)])

    notifier.notify("request.created", "created", {"request_id": 3})
    await healthy.wait_for(1)
    await hanging.wait_for(1)

    # The healthy webhook got its notification while the hanging one is still waiting.
    assert healthy.requests[0].body["request_id"] == 3
    assert hanging.open_connections == 1
    assert not logs[1].messages(logging.WARNING)


async def test_hanging_event_does_not_block_next_event_to_same_webhook(
    serve: Serve, make_notifier: MakeNotifier
) -> None:
    server = await serve(lambda i: None if i == 0 else 200)
    notifier = make_notifier([Webhook(url=server.url(), timeout=30)])

    notifier.notify("request.created", "first", {"n": 1})
    await server.wait_for(1)
    notifier.notify("request.approved", "second", {"n": 2})
    await server.wait_for(2)

    assert [r.body["n"] for r in server.requests] == [1, 2]
    assert server.open_connections >= 1  # the first delivery is still hanging


async def test_stop_returns_promptly_with_hanging_delivery(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    hanging = await serve(lambda _: None)
    notifier = make_notifier([Webhook(url=hanging.url(), timeout=60)])
    notifier.notify("request.created", "created", {})
    notifier.notify("request.denied", "denied", {})
    await hanging.wait_for(2)

    # A generous bound: the point is that stop() does not wait out the 60 s attempt timeout.
    await asyncio.wait_for(notifier.stop(timeout=0.1), 10)

    await hanging.wait_closed_connections()
    assert any("2 notification(s) not delivered at shutdown" in m
               for m in logs[1].messages(logging.WARNING))
    notifier.notify("request.created", "after stop", {})  # dropped quietly, no error
    assert len(hanging.requests) == 2


async def test_secrets_stay_out_of_logs_and_repr(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    port = closed_port()
    hook = Webhook(url=f"http://user:pw-secret@127.0.0.1:{port}/hooks/T1/tok-secret?k=q-secret",
                   max_attempts=2, headers=(("Authorization", "Bearer h-secret"),))
    notifier = make_notifier([hook])

    notifier.notify("request.created", "created", {})
    await notifier.join()

    seen = "\n".join([logs[1].text(), repr(hook), str(hook), repr(notifier.webhooks)])
    for secret in ("pw-secret", "tok-secret", "q-secret", "h-secret", "user"):
        assert secret not in seen
    assert f"http://127.0.0.1:{port}/hooks/T1/***" in seen
    assert "Authorization" in repr(hook)


async def test_userinfo_becomes_basic_auth(serve: Serve, make_notifier: MakeNotifier) -> None:
    server = await serve()
    url = server.url("/h").replace("://", "://bot:p%40ss@")
    notifier = make_notifier([Webhook(url=url)])

    notifier.notify("request.created", "x", {})
    await notifier.join()

    expected = base64.b64encode(b"bot:p@ss").decode()
    assert server.requests[0].headers["authorization"] == f"Basic {expected}"
    assert server.requests[0].headers["host"] == f"127.0.0.1:{server.port}"


async def test_full_queue_drops_with_warning(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    server = await serve()
    notifier = make_notifier([Webhook(url=server.url())], start=False, queue_size=1)

    notifier.notify("request.created", "kept", {"n": 1})
    notifier.notify("request.created", "dropped", {"n": 2})
    [warning] = logs[1].messages(logging.WARNING)
    assert "queue full" in warning and "request.created notification dropped" in warning

    notifier.start()
    await notifier.join()
    assert [r.body["n"] for r in server.requests] == [1]


async def test_notify_never_raises(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    server = await serve()
    notifier = make_notifier([Webhook(url=server.url())])
    circular: dict[str, Any] = {}
    circular["self"] = circular

    notifier.notify("request.created", "odd", {"obj": Path("/x")})
    notifier.notify("request.created", "circular", circular)
    await notifier.join()

    assert [r.body["text"] for r in server.requests] == ["odd"]
    assert server.requests[0].body["obj"] == "/x"
    assert any("could not be queued" in m for m in logs[1].messages(logging.ERROR))


async def test_notify_from_another_thread(serve: Serve, make_notifier: MakeNotifier) -> None:
    server = await serve()
    notifier = make_notifier([Webhook(url=server.url())])

    thread = threading.Thread(target=notifier.notify, args=("request.created", "t", {"n": 5}))
    thread.start()
    thread.join()
    await server.wait_for(1)

    assert server.requests[0].body["n"] == 5


async def test_replace_swaps_webhooks(serve: Serve, make_notifier: MakeNotifier) -> None:
    old, new = await serve(), await serve()
    notifier = make_notifier([Webhook(url=old.url())])
    notifier.notify("request.created", "before", {})
    await notifier.join()

    notifier.replace([Webhook(url=new.url()), Webhook(url=new.url())])
    assert notifier.webhooks == (Webhook(url=new.url()),)
    notifier.notify("request.approved", "after", {})
    await notifier.join()

    assert [r.body["text"] for r in old.requests] == ["before"]
    assert [r.body["text"] for r in new.requests] == ["after"]


async def test_replace_keeps_queued_work_of_unchanged_webhook(
    serve: Serve, make_notifier: MakeNotifier
) -> None:
    server = await serve()
    notifier = make_notifier([Webhook(url=server.url())], start=False)
    notifier.notify("request.created", "queued before reload", {})

    notifier.replace([Webhook(url=server.url())])
    notifier.start()
    await notifier.join()

    assert [r.body["text"] for r in server.requests] == ["queued before reload"]


def _tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed cert for 127.0.0.1 and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bastion-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_https_delivery_verifies_certificate(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records],
    tmp_path: Path,
) -> None:
    server_ctx, client_ctx = _tls_contexts(tmp_path)
    server = await serve(tls=server_ctx)
    trusted = make_notifier([Webhook(url=server.url())], ssl_context=client_ctx)
    untrusted = make_notifier([Webhook(url=server.url(), max_attempts=1)],
                              ssl_context=ssl.create_default_context())

    trusted.notify("request.created", "over tls", {})
    untrusted.notify("request.created", "refused", {})
    await trusted.join()
    await untrusted.join()

    assert [r.body["text"] for r in server.requests] == ["over tls"]
    [gave_up] = logs[1].messages(logging.WARNING)
    assert "SSLCertVerificationError" in gave_up


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "http:///x"}, "no host"),
        ({"url": "http://example.com:99999/"}, "malformed"),
        ({"url": "http://example.com/a b"}, "ASCII without spaces"),
        ({"url": "http://example.com/", "timeout": 0}, "timeout"),
        ({"url": "http://example.com/", "max_attempts": 0}, "max_attempts"),
        ({"url": "http://example.com/", "headers": (("X-A", "v\r\nX-Injected: 1"),)}, "X-A"),
        ({"url": "http://example.com/", "headers": (("Bad Name", "v"),)}, "header name"),
        ({"url": "http://example.com/", "headers": (("Content-Length", "1"),)}, "bastion"),
    ],
)
def test_webhook_refuses_unsendable_config(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        Webhook(**kwargs)
    assert "Injected" not in str(info.value)


def test_webhook_defaults_and_subscription() -> None:
    hook = Webhook(url="https://example.com/x")
    assert (hook.timeout, hook.max_attempts, hook.headers) == (5.0, 5, ())
    assert all(hook.wants(kind) for kind in DEFAULT_EVENTS)
    assert not hook.wants("session.started")
    picky = Webhook(url="https://example.com/x", events=frozenset({"session.started"}))
    assert picky.wants("session.started") and not picky.wants("request.created")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com:443/services/T0/B0/***"),
        ("http://u:p@[::1]:8080/hooks/key/?q=1#f", "http://[::1]:8080/hooks/***"),
        ("https://example.com", "https://example.com:443/"),
        ("https://example.com/notify", "https://example.com:443/***"),
        ("http://example.com:notaport/", "<invalid url>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_attempt_timeout_counts_as_failure(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    hanging = await serve(lambda _: None)
    notifier = make_notifier([Webhook(url=hanging.url(), timeout=0.1, max_attempts=2)])

    notifier.notify("request.created", "x", {})
    await notifier.join()

    assert len(hanging.requests) == 2
    [gave_up] = logs[1].messages(logging.WARNING)
    assert "after 2 attempt(s) (last: timed out)" in gave_up
    await hanging.wait_closed_connections()  # timed-out attempts hang up, they do not linger


async def test_proxy_from_the_environment(
    serve: Serve, make_notifier: MakeNotifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await serve()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url(""))
    notifier = make_notifier([Webhook(url="http://hooks.example.invalid/services/T1/tok")])

    notifier.notify("request.created", "through the proxy", {})
    await notifier.join()

    [request] = proxy.requests  # the name never resolves: only the proxy could have delivered it
    assert request.target == "http://hooks.example.invalid/services/T1/tok"
    assert request.body["text"] == "through the proxy"


async def test_the_answer_body_is_never_read(
    serve: Serve, make_notifier: MakeNotifier, logs: tuple[logging.Logger, Records]
) -> None:
    # A receiver promising a huge body and never sending it: the status is all that counts.
    server = await serve(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\nok")
    notifier = make_notifier([Webhook(url=server.url(), timeout=30, max_attempts=1)])

    notifier.notify("request.created", "x", {})
    await asyncio.wait_for(notifier.join(), WAIT)

    assert len(server.requests) == 1 and not logs[1].messages(logging.WARNING)
    await server.wait_closed_connections()
