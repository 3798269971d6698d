"""The project's router (monolithic) and proxy (disaggregated): one aiohttp server in front of
the vLLM servers, streaming tokens through.

Monolithic: each `POST /v1/completions` goes to the mixed-pool server that the pool's policy
picks, and its response is relayed chunk by chunk.

Disaggregated (vLLM's two-hop protocol for NixlConnector): the request goes first to a prefill
server with `max_tokens=1`, `stream=false` and `kv_transfer_params={"do_remote_decode": true}`;
the `kv_transfer_params` it answers with (engine id, block ids, host, port) go with the original
request to a decode server, which pulls the KV and streams the tokens. With ExampleConnector
the KV goes through shared files keyed by the prompt, so the second hop needs no parameters.

What the gateway observes travels back in response headers (wall-clock epoch seconds, the
clock the replayer uses too). Monolithic: `x-pdsim-instance`. Disaggregated:
`x-pdsim-prefill-instance`, `x-pdsim-decode-instance`, `x-pdsim-prefill-sent`,
`x-pdsim-prefill-started` (the prefill server's own TTFT minus its queue time, counted back
from the answer's receipt), `x-pdsim-prefill-done`, `x-pdsim-decode-sent`,
`x-pdsim-cached-prompt-tokens`, and after a failover `x-pdsim-retries`.

The gateway never leaves a client waiting on a server that has failed. Every error names the
server (role, instance, URL) and what happened, as JSON `{"error": ..., "stage": ...,
"upstream": ...}` with an HTTP status before streaming has started, or as an SSE
`data: {"error": ...}` event (and no `[DONE]`) after:
* a 4xx/5xx answer: the server's status and message, passed through;
* no TCP connection within `connect_s`: 504; connection refused: 502; no server of the pool
  up: 503;
* a prefill answer later than `prefill_s`, or a stream silent for `upstream_idle_s`
  (including the wait for its headers): 504;
* a connection closed mid-answer (a crashed server), or a stream that ends without `[DONE]`:
  502, or the SSE error event.
Failover: a prefill that failed without answering (connection refused or closed, connect
timeout) is resent to another prefill server that is up, since nothing has reached the client;
a decode or monolithic request only when its connection could not be made at all (the server
never saw it). Each server is tried at most once per request; timeouts are not retried (the
server may still be working on it). A server whose connection failed is marked down and gets no
requests until its `/health` answers again (polled every `metrics_poll_s`): a restarted server
rejoins by itself.

`GET /health` answers 200; `GET /deployment` returns the spec the gateway was started with;
`GET /stats` per server: up, requests sent, failed, outstanding.
Run as `python -m real.gateway <spec.json>` (see `GatewaySpec`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from real.backends import Backend, Pool, poll_metrics

NIXL_FIRST_HOP = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                  "remote_block_ids": None, "remote_host": None, "remote_port": None}


@dataclass(frozen=True)
class GatewaySpec:
    architecture: str                 # monolithic | disaggregated
    host: str
    port: int
    pools: dict[str, list[str]]       # role (mixed | prefill | decode) -> server URLs
    routers: dict[str, str]           # role -> sim.router policy
    connector: str = "NixlConnector"  # disaggregated only: NixlConnector | ExampleConnector
    model: str = ""                   # served model name
    metrics_poll_s: float = 0.5
    connect_s: float = 10.0           # real.timeouts.connect_s: longest wait for a TCP connection to a server
    upstream_idle_s: float = 55.0     # real.timeouts.upstream_idle_s: longest silence of a streaming server
    prefill_s: float = 600.0          # real.timeouts.prefill_s: longest wait for a prefill server's answer

    @classmethod
    def load(cls, path: Path) -> "GatewaySpec":
        return cls(**json.loads(path.read_text()))

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


class UpstreamError(Exception):
    """A server answered with an error, could not be reached, went silent or closed its stream;
    becomes the client's answer. `retryable`: the request can go to another server of the pool."""

    def __init__(self, status: int, message: str, stage: str, upstream: str = "", retryable: bool = False):
        super().__init__(message)
        self.status, self.message, self.stage, self.upstream = status, message, stage, upstream
        self.retryable = retryable

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "stage": self.stage, "upstream": self.upstream}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)

    def sse(self) -> bytes:
        return f"data: {json.dumps(self.body())}\n\n".encode()


def _prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt's length in words (= tokens with the project's tokenizer) or token ids."""
    prompt = body.get("prompt", "")
    return len(prompt) if isinstance(prompt, list) else len(str(prompt).split())


def _name(backend: Backend, role: str) -> str:
    return f"{role} server {backend.instance_id} ({backend.url})"


def _failure(error: BaseException, backend: Backend, role: str, spec: GatewaySpec, read_limit_s: float,
             received: int) -> UpstreamError:
    """What a client error while talking to `backend` means, in words that name the server and the
    setting; connection failures mark the backend down until its /health answers again."""
    who = _name(backend, role)
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        backend.up = False
        return UpstreamError(504, f"{who}: no connection within {spec.connect_s:g} s (real.timeouts.connect_s)",
                             role, backend.url, retryable=True)
    if isinstance(error, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        if role == "prefill":
            return UpstreamError(504, f"{who}: no answer within {read_limit_s:g} s (real.timeouts.prefill_s)",
                                 role, backend.url)
        return UpstreamError(504, f"{who}: sent nothing for {read_limit_s:g} s after {received} bytes "
                                  "(real.timeouts.upstream_idle_s)", role, backend.url)
    if isinstance(error, aiohttp.ClientConnectorError):
        backend.up = False
        return UpstreamError(502, f"{who} unreachable: {error.os_error.strerror or error.os_error}", role,
                             backend.url, retryable=True)
    backend.up = False
    what = "closed the connection" if isinstance(error, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                                                         aiohttp.ClientOSError)) else "failed"
    # the request reached the server: only a prefill (nothing has reached the client yet) is resent
    return UpstreamError(502, f"{who} {what} after {received} bytes: {type(error).__name__}: {error}", role,
                         backend.url, retryable=role == "prefill")


async def _error_answer(response: aiohttp.ClientResponse, backend: Backend, role: str) -> UpstreamError:
    """A server's non-200 answer as the client's error: its status, the server named, its message."""
    text = await response.text(errors="replace")
    try:
        detail = _error_text(json.loads(text))
    except ValueError:
        detail = text.strip()[:300] or "(empty body)"
    return UpstreamError(response.status, f"{_name(backend, role)} answered HTTP {response.status}: {detail}",
                         role, backend.url)


class Gateway:
    def __init__(self, spec: GatewaySpec, session: aiohttp.ClientSession):
        self.spec = spec
        self.session = session
        self.pools = {role: Pool.of(role, urls, spec.routers[role]) for role, urls in spec.pools.items()}

    def _pick(self, role: str, prompt_tokens: int) -> Backend:
        backend = self.pools[role].pick(prompt_tokens)
        if backend is None:
            raise UpstreamError(503, f"no {role} server is up (all {len(self.pools[role].backends)} failed their "
                                     f"last /health or request)", role)
        return backend

    def stats(self) -> dict[str, Any]:
        """Per server: up, requests sent, failed and outstanding, as the gateway counted them."""
        return {role: [{"instance": b.instance_id, "url": b.url, "up": b.up, "sent": b.sent, "failed": b.failed,
                        "outstanding": b.outstanding} for b in pool.backends] for role, pool in self.pools.items()}

    async def _with_failover(self, role: str, prompt_tokens: int, attempt, headers: dict[str, str]):
        """`attempt(backend)` on the backend the pool picks; on a retryable failure (the request
        did not reach the client) again on another backend that is up, at most once per backend."""
        tried: list[Backend] = []
        last: UpstreamError | None = None
        while True:
            backend = self._pick(role, prompt_tokens)
            if backend in tried and last is not None:
                raise last
            try:
                return await attempt(backend)
            except UpstreamError as error:
                backend.failed += 1
                if not error.retryable or len(tried) + 1 >= len(self.pools[role].backends):
                    raise
                tried.append(backend)
                last = error
                headers["x-pdsim-retries"] = str(len(tried))
                headers[f"x-pdsim-{role}-failed"] = error.message[:200]

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError as error:
            return web.json_response({"error": f"request body is not JSON: {error}", "stage": "gateway"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "request body must be a JSON object", "stage": "gateway"}, status=400)
        prompt_tokens = _prompt_tokens(body)
        headers: dict[str, str] = {}
        try:
            if self.spec.architecture == "disaggregated":
                body = await self._with_failover("prefill", prompt_tokens,
                                                 lambda b: self._prefill(b, body, prompt_tokens, headers), headers)
                role = "decode"
            else:
                role = "mixed"
            return await self._with_failover(
                role, prompt_tokens, lambda b: self._relay(request, b, body, headers, prompt_tokens, role), headers)
        except UpstreamError as error:
            return error.response()

    async def _prefill(self, backend: Backend, body: dict[str, Any], prompt_tokens: int,
                       headers: dict[str, str]) -> dict[str, Any]:
        """First hop: compute the prompt on a prefill server; the decode request to send next."""
        first = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        first |= {"max_tokens": 1, "min_tokens": 1, "stream": False}
        if self.spec.connector == "NixlConnector":
            first["kv_transfer_params"] = NIXL_FIRST_HOP
        headers["x-pdsim-prefill-instance"] = str(backend.instance_id)
        headers["x-pdsim-prefill-sent"] = repr(time.time())
        backend.outstanding += 1
        backend.sent += 1
        backend.queued_prompt_tokens += prompt_tokens
        timeout = aiohttp.ClientTimeout(total=self.spec.prefill_s, sock_connect=self.spec.connect_s)
        try:
            async with self.session.post(f"{backend.url}/v1/completions", json=first, timeout=timeout) as response:
                if response.status != 200:
                    raise await _error_answer(response, backend, "prefill")
                text = await response.text(errors="replace")
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise _failure(error, backend, "prefill", self.spec, self.spec.prefill_s, 0) from None
        finally:
            backend.outstanding -= 1
            backend.queued_prompt_tokens -= prompt_tokens
        try:
            answer = json.loads(text)
            if not isinstance(answer, dict):
                raise ValueError(f"a JSON {type(answer).__name__}, not an object")
        except ValueError as error:
            raise UpstreamError(502, f"{_name(backend, 'prefill')} answered 200 with a body that is not a "
                                     f"completion ({error}): {text[:200]!r}", "prefill", backend.url) from None
        done = time.time()
        headers["x-pdsim-prefill-done"] = repr(done)
        metrics = answer.get("metrics") or {}
        if "time_to_first_token_ms" in metrics:
            busy_ms = metrics["time_to_first_token_ms"] - metrics.get("queue_time_ms", 0.0)
            headers["x-pdsim-prefill-started"] = repr(done - busy_ms / 1e3)
        details = (answer.get("usage") or {}).get("prompt_tokens_details") or {}
        headers["x-pdsim-cached-prompt-tokens"] = str(details.get("cached_tokens") or 0)
        if self.spec.connector == "NixlConnector":
            params = answer.get("kv_transfer_params")
            if not params:
                raise UpstreamError(502, f"{_name(backend, 'prefill')} answered without kv_transfer_params: is it "
                                         "started with --kv-transfer-config NixlConnector?", "prefill", backend.url)
            return body | {"kv_transfer_params": params}
        return body

    async def _relay(self, request: web.Request, backend: Backend, body: dict[str, Any], headers: dict[str, str],
                     prompt_tokens: int, role: str) -> web.StreamResponse:
        """Send `body` to `backend` and stream its answer to the client as it comes. A failure
        before the first byte is an UpstreamError (the client gets an HTTP error); after it,
        the stream ends with an SSE error event instead of `[DONE]`."""
        if role == "decode":
            headers["x-pdsim-decode-instance"] = str(backend.instance_id)
            headers["x-pdsim-decode-sent"] = repr(time.time())
        else:
            headers["x-pdsim-instance"] = str(backend.instance_id)
        backend.outstanding += 1
        backend.sent += 1
        backend.queued_prompt_tokens += prompt_tokens
        answered = False
        received = 0
        tail = b""
        partial = b""   # a line not yet ended: written with its end (error events are rewritten whole)
        client: web.StreamResponse | None = None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.spec.connect_s,
                                        sock_read=self.spec.upstream_idle_s)
        try:
            async with self.session.post(f"{backend.url}/v1/completions", json=body, timeout=timeout) as response:
                if response.status != 200:
                    raise await _error_answer(response, backend, role)
                client = web.StreamResponse(status=200, headers=headers | {
                    "content-type": response.headers.get("content-type", "text/event-stream")})
                await client.prepare(request)
                async for chunk in response.content.iter_any():
                    if not answered:
                        answered = True
                        backend.queued_prompt_tokens -= prompt_tokens
                    received += len(chunk)
                    tail = (tail + chunk)[-64:]
                    lines = partial + chunk
                    end = lines.rfind(b"\n") + 1
                    lines, partial = lines[:end], lines[end:]
                    if b'"error"' in lines:
                        lines = _with_server_named(lines, backend, role)
                    try:
                        await client.write(lines)
                    except ConnectionResetError:   # the client hung up: leaving closes the upstream
                        return client              # request, and vLLM aborts it
            if partial:
                with contextlib.suppress(ConnectionResetError):
                    await client.write(partial)
            if body.get("stream") and b"[DONE]" not in tail:
                backend.failed += 1
                early = UpstreamError(502, f"{_name(backend, role)} ended its stream after {received} bytes "
                                           "without [DONE]", role, backend.url)
                with contextlib.suppress(ConnectionResetError):
                    await client.write(early.sse())
                return client
            with contextlib.suppress(ConnectionResetError):
                await client.write_eof()
            return client
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            failure = _failure(error, backend, role, self.spec, self.spec.upstream_idle_s, received)
            if client is None:
                raise failure from None
            backend.failed += 1
            with contextlib.suppress(ConnectionResetError):
                await client.write(failure.sse())
            return client
        finally:
            backend.outstanding -= 1
            if not answered:
                backend.queued_prompt_tokens -= prompt_tokens


def _with_server_named(lines: bytes, backend: Backend, role: str) -> bytes:
    """Whole SSE lines from `backend`, each error event of its own (vLLM sends one when, for
    example, a KV load fails mid-request) rewritten as the gateway's, naming the server."""
    named = []
    for line in lines.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                event = json.loads(line[5:])
            except ValueError:
                event = None
            if isinstance(event, dict) and "error" in event:
                error = UpstreamError(502, f"{_name(backend, role)} sent an error event: {_error_text(event)}", role,
                                      backend.url)
                line = error.sse().rstrip(b"\n")
        named.append(line)
    return b"\n".join(named)


def _error_text(answer: Any) -> str:
    if isinstance(answer, dict):
        error = answer.get("error", answer)
        return str(error.get("message", error)) if isinstance(error, dict) else str(error)
    return str(answer)


GATEWAY = web.AppKey("gateway", Gateway)


def make_app(spec: GatewaySpec) -> web.Application:
    """The gateway as an aiohttp application; its client session and metrics poller live and
    die with the application."""
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def lifetime(app: web.Application):
        # No total timeout on a stream: a long generation is legitimate; each request sets its own limits.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=spec.connect_s))
        app[GATEWAY] = gateway = Gateway(spec, session)
        poller = asyncio.create_task(poll_metrics(session, list(gateway.pools.values()), spec.metrics_poll_s))
        yield
        poller.cancel()
        await session.close()

    app.cleanup_ctx.append(lifetime)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await request.app[GATEWAY].completions(request)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def deployment(_: web.Request) -> web.Response:
        return web.json_response(asdict(spec))

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(request.app[GATEWAY].stats())

    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    app.router.add_get("/deployment", deployment)
    app.router.add_get("/stats", stats)
    return app


def main(argv: list[str]) -> None:
    spec = GatewaySpec.load(Path(argv[0]))
    # handler_cancellation: a client that hangs up cancels its relay, which closes the upstream request
    web.run_app(make_app(spec), host=spec.host, port=spec.port, access_log=None, print=None,
                handler_cancellation=True)


if __name__ == "__main__":
    main(sys.argv[1:])
