"""Open-loop trace replay against a deployment's router or proxy, streaming.

Each request is sent at its trace time (the dispatcher sleeps until then and never waits for
answers), asks for exactly the traced output (`max_tokens = min_tokens`, `ignore_eos`) with a
prompt of exactly the traced length (`real.vocab`: one word, one token), and reads the stream.
`stream_options.continuous_usage_stats` makes every chunk carry the running count of output
tokens, so a chunk holding several tokens (vLLM merges outputs when its client lags) is
counted exactly: each of its tokens gets the chunk's arrival time.

Every request ends `completed`, `rejected` (the server refused it with HTTP 400, e.g. longer
than max_model_len) or `failed` (any other error, a broken stream, a wrong token count, or a
timeout: `request_s` end to end, `idle_s` between chunks), with the reason. Times are
wall-clock `time.time()` seconds, the clock the gateway's headers use.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field

import aiohttp

from real.vocab import prompt_text
from sim.workload import Workload


@dataclass(frozen=True, slots=True)
class ReplayLimits:
    request_s: float       # longest a request may take end to end
    idle_s: float          # longest wait for the next chunk of a stream
    connect_s: float = 10.0


@dataclass(slots=True)
class Outcome:
    """What the client saw of one request; epoch seconds, NaN when never seen."""

    request_id: int
    intended_s: float                 # epoch time the trace says it arrives
    sent_s: float = math.nan          # epoch time the replayer actually sent it
    status: str = "pending"           # completed | rejected | failed
    reason: str = ""
    token_times: list[float] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)   # the gateway's x-pdsim-* observations
    prompt_tokens_served: int = -1    # usage.prompt_tokens as the server counted them (-1: not reported)
    cached_prompt_tokens: int = 0     # usage.prompt_tokens_details.cached_tokens
    server_metrics: dict[str, float] = field(default_factory=dict)   # vLLM's per-request `metrics` (ms)


def request_body(model: str, request_id: int, prompt_tokens: int, output_tokens: int, vocab_size: int) -> dict:
    return {"model": model, "prompt": prompt_text(request_id, prompt_tokens, vocab_size),
            "max_tokens": output_tokens, "min_tokens": output_tokens, "ignore_eos": True, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}


class _Idle(Exception):
    """No chunk within idle_s."""


async def _read_stream(response: aiohttp.ClientResponse, outcome: Outcome, expected: int, idle_s: float) -> None:
    emitted = 0
    done = False
    while True:
        try:
            line = await asyncio.wait_for(response.content.readline(), idle_s)
        except TimeoutError:
            raise _Idle() from None
        if not line:
            break
        now = time.time()
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            break
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise RuntimeError(f"stream chunk is not a JSON object: {payload[:100]!r}")
        if "error" in chunk:
            raise RuntimeError(f"stream error: {_error_message(chunk)}")
        usage = chunk.get("usage") or {}
        count = usage.get("completion_tokens")
        if count is None:   # a server without continuous usage stats: one token per text chunk
            count = emitted + sum(1 for c in chunk.get("choices", []) if c.get("text"))
        outcome.token_times.extend([now] * (count - emitted))
        emitted = max(emitted, count)
        if "prompt_tokens" in usage:
            outcome.prompt_tokens_served = int(usage["prompt_tokens"])
        details = usage.get("prompt_tokens_details") or {}
        outcome.cached_prompt_tokens = int(details.get("cached_tokens") or outcome.cached_prompt_tokens)
        outcome.server_metrics |= chunk.get("metrics") or {}
    if not done:
        raise RuntimeError(f"stream ended after {emitted} of {expected} tokens without [DONE]")
    if emitted != expected:
        raise RuntimeError(f"got {emitted} output tokens, asked for {expected}")


def _error_message(answer: object) -> str:
    """The message of an OpenAI-style or gateway error body (`error` a string or {message})."""
    error = answer.get("error", answer) if isinstance(answer, dict) else answer
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


async def _send(session: aiohttp.ClientSession, url: str, body: dict, outcome: Outcome, limits: ReplayLimits) -> None:
    outcome.sent_s = time.time()
    try:
        async with asyncio.timeout(limits.request_s):
            async with session.post(f"{url}/v1/completions", json=body) as response:
                outcome.headers = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-pdsim-")}
                if response.status != 200:
                    text = (await response.text(errors="replace"))[:500]
                    try:
                        text = _error_message(json.loads(text))
                    except ValueError:
                        pass
                    outcome.status = "rejected" if response.status == 400 else "failed"
                    outcome.reason = f"HTTP {response.status}: {text}"
                    return
                await _read_stream(response, outcome, body["max_tokens"], limits.idle_s)
        asked = len(body["prompt"].split())
        if outcome.prompt_tokens_served not in (-1, asked):
            raise RuntimeError(f"the server counted {outcome.prompt_tokens_served} prompt tokens, {asked} were sent: "
                               f"its tokenizer is not one word = one token (real.model_dir)")
        outcome.status = "completed"
    except _Idle:
        outcome.status = "failed"
        outcome.reason = (f"timeout: no chunk for {limits.idle_s:g} s (real.timeouts.idle_s), "
                          f"{len(outcome.token_times)} tokens received")
    except (aiohttp.ClientError, RuntimeError, ValueError) as error:   # before TimeoutError: aiohttp's
        outcome.status, outcome.reason = "failed", f"{type(error).__name__}: {error}"   # timeouts are both
    except TimeoutError:
        outcome.status = "failed"
        outcome.reason = (f"timeout: not done within {limits.request_s:g} s (real.timeouts.request_s), "
                          f"{len(outcome.token_times)} tokens received")


async def replay(url: str, model: str, workload: Workload, vocab_size: int, limits: ReplayLimits) -> list[Outcome]:
    """Send every request of `workload` to `url` at its arrival time; return when all have ended.
    The first request is sent at once; the replay's epoch start is `outcomes[0].intended_s`."""
    bodies = [request_body(model, i, int(p), int(o), vocab_size)
              for i, (p, o) in enumerate(zip(workload.prompt_tokens, workload.output_tokens))]
    connector = aiohttp.TCPConnector(limit=0)   # open loop: never queue requests in the client
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=limits.connect_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.time()
        outcomes = [Outcome(i, start + float(at)) for i, at in enumerate(workload.arrival_s)]
        tasks = []
        for outcome, body in zip(outcomes, bodies):
            delay = outcome.intended_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(session, url, body, outcome, limits)))
        await asyncio.gather(*tasks)
    return outcomes
