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
`x-pdsim-cached-prompt-tokens`. A failure before streaming starts answers with the upstream
status (or 502/503) and a JSON `{"error": ..., "stage": ...}`; a failure while streaming ends
the stream with an SSE `data: {"error": ...}` event and no `[DONE]`.

`GET /health` answers 200; `GET /deployment` returns the spec the gateway was started with.
Run as `python -m real.gateway <spec.json>` (see `GatewaySpec`).
"""

from __future__ import annotations

import asyncio
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

    @classmethod
    def load(cls, path: Path) -> "GatewaySpec":
        return cls(**json.loads(path.read_text()))

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


class UpstreamError(Exception):
    """A server answered with an error or could not be reached; becomes the client's answer."""

    def __init__(self, status: int, message: str, stage: str):
        super().__init__(message)
        self.status, self.message, self.stage = status, message, stage

    def response(self) -> web.Response:
        return web.json_response({"error": self.message, "stage": self.stage}, status=self.status)


def _prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt's length in words (= tokens with the project's tokenizer) or token ids."""
    prompt = body.get("prompt", "")
    return len(prompt) if isinstance(prompt, list) else len(str(prompt).split())


class Gateway:
    def __init__(self, spec: GatewaySpec, session: aiohttp.ClientSession):
        self.spec = spec
        self.session = session
        self.pools = {role: Pool.of(role, urls, spec.routers[role]) for role, urls in spec.pools.items()}

    def _pick(self, role: str, prompt_tokens: int) -> Backend:
        backend = self.pools[role].pick(prompt_tokens)
        if backend is None:
            raise UpstreamError(503, f"no {role} server is up", role)
        return backend

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt_tokens = _prompt_tokens(body)
        headers: dict[str, str] = {}
        try:
            if self.spec.architecture == "disaggregated":
                body = await self._prefill(body, prompt_tokens, headers)
                role = "decode"
            else:
                role = "mixed"
            backend = self._pick(role, prompt_tokens)
            if role == "decode":
                headers["x-pdsim-decode-instance"] = str(backend.instance_id)
                headers["x-pdsim-decode-sent"] = repr(time.time())
            else:
                headers["x-pdsim-instance"] = str(backend.instance_id)
            return await self._relay(request, backend, body, headers, prompt_tokens, role)
        except UpstreamError as error:
            return error.response()

    async def _prefill(self, body: dict[str, Any], prompt_tokens: int, headers: dict[str, str]) -> dict[str, Any]:
        """First hop: compute the prompt on a prefill server; the decode request to send next."""
        backend = self._pick("prefill", prompt_tokens)
        first = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        first |= {"max_tokens": 1, "min_tokens": 1, "stream": False}
        if self.spec.connector == "NixlConnector":
            first["kv_transfer_params"] = NIXL_FIRST_HOP
        headers["x-pdsim-prefill-instance"] = str(backend.instance_id)
        headers["x-pdsim-prefill-sent"] = repr(time.time())
        backend.outstanding += 1
        backend.queued_prompt_tokens += prompt_tokens
        try:
            async with self.session.post(f"{backend.url}/v1/completions", json=first) as response:
                answer = await response.json(content_type=None)
                if response.status != 200:
                    raise UpstreamError(response.status, _error_text(answer), "prefill")
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            backend.up = False
            raise UpstreamError(502, f"prefill server {backend.instance_id} unreachable: {error!r}", "prefill")
        finally:
            backend.outstanding -= 1
            backend.queued_prompt_tokens -= prompt_tokens
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
                raise UpstreamError(502, "prefill server answered without kv_transfer_params: is it started with "
                                         "--kv-transfer-config NixlConnector?", "prefill")
            return body | {"kv_transfer_params": params}
        return body

    async def _relay(self, request: web.Request, backend: Backend, body: dict[str, Any], headers: dict[str, str],
                     prompt_tokens: int, role: str) -> web.StreamResponse:
        """Send `body` to `backend` and stream its answer to the client as it comes."""
        backend.outstanding += 1
        backend.queued_prompt_tokens += prompt_tokens
        answered = False
        client: web.StreamResponse | None = None
        try:
            async with self.session.post(f"{backend.url}/v1/completions", json=body) as response:
                if response.status != 200:
                    raise UpstreamError(response.status, _error_text(await response.json(content_type=None)), role)
                client = web.StreamResponse(status=200, headers=headers | {
                    "content-type": response.headers.get("content-type", "text/event-stream")})
                await client.prepare(request)
                async for chunk in response.content.iter_any():
                    if not answered:
                        answered = True
                        backend.queued_prompt_tokens -= prompt_tokens
                    await client.write(chunk)
            await client.write_eof()
            return client
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            backend.up = False
            message = f"{role} server {backend.instance_id} failed: {error!r}"
            if client is None:
                raise UpstreamError(502, message, role)
            await client.write(f"data: {json.dumps({'error': message, 'stage': role})}\n\n".encode())
            return client
        finally:
            backend.outstanding -= 1
            if not answered:
                backend.queued_prompt_tokens -= prompt_tokens


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
        # No total timeout: a long generation is legitimate; the replayer enforces its limits.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
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

    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    app.router.add_get("/deployment", deployment)
    return app


def main(argv: list[str]) -> None:
    spec = GatewaySpec.load(Path(argv[0]))
    web.run_app(make_app(spec), host=spec.host, port=spec.port, access_log=None, print=None)


if __name__ == "__main__":
    main(sys.argv[1:])
