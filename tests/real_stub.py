"""A small real HTTP server that speaks the part of vLLM's OpenAI API the gateway and the
replayer use, for tests that need no vLLM: `/v1/completions` (streamed with continuous usage
stats, or one JSON answer that carries `kv_transfer_params` when asked to prefill for a remote
decode), `/health`, `/metrics`. Every request body it receives is kept in `received`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class StubServer:
    name: str
    token_gap_s: float = 0.005
    fail_after_tokens: int | None = None   # drop the connection after this many tokens
    refuse_status: int | None = None       # answer every completion with this HTTP status
    received: list[dict[str, Any]] = field(default_factory=list)
    app: web.Application = field(init=False)

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/v1/completions", self.completions)
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/metrics", self.metrics)

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(text='# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0"} 0.25\n')

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        if self.refuse_status:
            return web.json_response({"error": {"message": f"{self.name} refuses"}}, status=self.refuse_status)
        prompt_tokens = len(body["prompt"].split())
        if not body.get("stream"):
            answer: dict[str, Any] = {"choices": [{"text": " w1"}], "metrics": {"time_to_first_token_ms": 20.0,
                                                                                "queue_time_ms": 5.0},
                                      "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1,
                                                "prompt_tokens_details": {"cached_tokens": 3}}}
            if (body.get("kv_transfer_params") or {}).get("do_remote_decode"):
                answer["kv_transfer_params"] = {"remote_engine_id": self.name, "remote_block_ids": [[1]]}
            return web.json_response(answer)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for n in range(1, body["max_tokens"] + 1):
            if self.fail_after_tokens is not None and n > self.fail_after_tokens:
                request.transport.close()   # a crash: the connection drops mid-stream
                return response
            await asyncio.sleep(self.token_gap_s)
            chunk = {"choices": [{"text": f" w{n}"}], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n}}
            if n == body["max_tokens"]:
                chunk["metrics"] = {"time_to_first_token_ms": 10.0, "queue_time_ms": 2.0}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free local port; the runner (to clean up) and the base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"
