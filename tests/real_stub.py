"""A small real HTTP server that speaks the part of vLLM's OpenAI API the gateway and the
replayer use, for tests that need no vLLM: `/v1/completions` (streamed with continuous usage
stats, or one JSON answer that carries `kv_transfer_params` when asked to prefill for a remote
decode), `/health`, `/metrics`. Every request body it receives is kept in `received`.

It misbehaves on request, as a failing vLLM server would: drop the connection mid-stream
(`fail_after_tokens`), go silent without closing (`stall_after_tokens`), end the stream
cleanly but early without `[DONE]` (`end_after_tokens`), hold back its answer's headers
(`hang_s`), crash before answering (`drop_requests`), refuse with an HTTP status and a JSON or plain-text body (`refuse_status`,
`refuse_text`), answer a prefill with a body that is not JSON (`garbage_answer`).
`python -m tests.real_stub PORT [NAME]` serves one as its own process (to be killed for real).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class StubServer:
    name: str
    token_gap_s: float = 0.005
    fail_after_tokens: int | None = None   # drop the connection after this many tokens
    stall_after_tokens: int | None = None  # after this many tokens send nothing more, keep the connection open
    end_after_tokens: int | None = None    # end the stream cleanly after this many tokens, without [DONE]
    error_after_tokens: int | None = None  # after this many tokens send an error event, then [DONE], as vLLM
                                           # does when a request fails mid-stream (a KV load that failed)
    hang_s: float = 0.0                    # wait this long before answering at all (no headers meanwhile)
    refuse_status: int | None = None       # answer every completion with this HTTP status
    refuse_text: str | None = None         # ... and this plain-text body instead of an OpenAI JSON error
    garbage_answer: bool = False           # answer non-streamed requests 200 with a body that is not JSON
    drop_requests: bool = False            # close the connection on every completion without answering
    received: list[dict[str, Any]] = field(default_factory=list)
    polled: list[str] = field(default_factory=list)   # paths of the GETs answered
    app: web.Application = field(init=False)

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/v1/completions", self.completions)
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/metrics", self.metrics)

    async def health(self, request: web.Request) -> web.Response:
        self.polled.append(request.path)
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        self.polled.append(request.path)
        return web.Response(text='# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0"} 0.25\n'
                                 f'# TYPE stub_requests counter\nstub_requests_total {len(self.received)}\n')

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        if self.hang_s:
            await _wait(request, self.hang_s)
        if self.drop_requests:
            request.transport.close()   # a crash while computing: nothing comes back
            return web.Response()
        if self.refuse_status:
            if self.refuse_text is not None:
                return web.Response(text=self.refuse_text, status=self.refuse_status)
            return web.json_response({"error": {"message": f"{self.name} refuses"}}, status=self.refuse_status)
        prompt_tokens = len(body["prompt"].split())
        if not body.get("stream"):
            if self.garbage_answer:
                return web.Response(text="<html>not json", content_type="text/html")
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
            if self.stall_after_tokens is not None and n > self.stall_after_tokens:
                await _wait(request, 3600)   # a hung server: connection open, nothing sent
            if self.end_after_tokens is not None and n > self.end_after_tokens:
                await response.write_eof()  # a clean but early end, no [DONE]
                return response
            if self.error_after_tokens is not None and n > self.error_after_tokens:
                error = {"error": {"object": "error", "message": "Internal server error", "code": 500}}
                await response.write(f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode())
                await response.write_eof()
                return response
            await _wait(request, self.token_gap_s)
            chunk = {"choices": [{"text": f" w{n}"}], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n}}
            if n == body["max_tokens"]:
                chunk["metrics"] = {"time_to_first_token_ms": 10.0, "queue_time_ms": 2.0}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def _wait(request: web.Request, seconds: float) -> None:
    """Sleep up to `seconds`, less if the client hangs up (so that a test's cleanup is quick)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        if request.transport is None or request.transport.is_closing():
            return
        await asyncio.sleep(min(0.02, left))


async def serve(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve `app` on a local port (0: a free one); the runner (to clean up) and the base URL.
    A client hanging up cancels its handler, as in the gateway's own server."""
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


if __name__ == "__main__":
    stub = StubServer(sys.argv[2] if len(sys.argv) > 2 else "stub", token_gap_s=0.02)
    web.run_app(stub.app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
