"""The book's GPT behind an HTTP interface (document 000 FAQ Q5: 服务化封装, 监控告警, 安全防护).

create_app(model, tokenizer, settings) -> FastAPI app with
  POST /v1/generate  validated JSON in, generated text out
  GET  /healthz      liveness
  GET  /metrics      Prometheus text format: requests and errors by code, latency, tokens
Limits: prompt length (422 chars / 413 tokens), max_new_tokens and sampling ranges (422), body size
(413), API key (401), concurrency (429), time (504). `python -m gptbook serve` runs it with uvicorn.
"""
# no `from __future__ import annotations`: FastAPI must see the request class defined in create_app
import asyncio
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..generate import check_sampling, generate

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeSettings:
    max_prompt_chars: int = 2000      # longer prompt strings -> 422 (schema)
    max_prompt_tokens: int = 64       # longer after tokenisation -> 413
    max_new_tokens: int = 64          # upper bound of the request field -> 422
    max_temperature: float = 2.0
    timeout_s: float = 10.0           # queueing + generation; longer -> 504
    max_concurrency: int = 8          # requests admitted at once (running + waiting); more -> 429
    max_body_bytes: int = 16_384      # Content-Length above this -> 413
    api_key: Optional[str] = None     # when set, /v1/* needs header X-API-Key (else 401)

    def check(self, block_size: int):
        if self.max_prompt_tokens + self.max_new_tokens > block_size:
            raise ValueError(f"max_prompt_tokens + max_new_tokens = "
                             f"{self.max_prompt_tokens + self.max_new_tokens} exceeds the model's "
                             f"block_size={block_size}; lower one of them")
        if self.max_concurrency < 1 or self.timeout_s <= 0:
            raise ValueError("max_concurrency must be >= 1 and timeout_s > 0")


class GenerationTimeout(RuntimeError):
    """Raised inside the worker thread when a request's deadline has passed."""


_worker = threading.local()   # the deadline of the request this thread is working on


def _deadline_hook(module, args):
    """Forward pre-hook: stop a generation whose deadline passed (checked once per token)."""
    deadline = getattr(_worker, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise GenerationTimeout("deadline passed")


def request_model(s: ServeSettings, vocab_size: int):
    """The pydantic model of a /v1/generate body, with the limits of these settings."""
    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        prompt: str = Field(min_length=1, max_length=s.max_prompt_chars)
        max_new_tokens: int = Field(min(16, s.max_new_tokens), ge=1, le=s.max_new_tokens)
        temperature: float = Field(0.0, ge=0.0, le=s.max_temperature)
        top_k: Optional[int] = Field(None, ge=1, le=vocab_size)
        top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
        repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
        seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)

        @model_validator(mode="after")
        def _sampling(self):
            # the same rules generate() enforces; a ValueError here becomes a 422
            check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)
            return self
    return GenerateRequest


def _metrics(registry):
    from prometheus_client import Counter, Gauge, Histogram
    return dict(
        requests=Counter("gptbook_http_requests", "HTTP requests by route and status code",
                         ["route", "code"], registry=registry),
        errors=Counter("gptbook_http_errors", "HTTP responses with status >= 400, by code",
                       ["code"], registry=registry),
        latency=Histogram("gptbook_generate_latency_seconds", "/v1/generate latency (all codes)",
                          buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=registry),
        tokens=Counter("gptbook_generated_tokens", "new tokens generated", registry=registry),
        tps=Gauge("gptbook_tokens_per_second", "new tokens / second of the last request",
                  registry=registry),
        in_flight=Gauge("gptbook_in_flight", "requests admitted and not finished", registry=registry),
    )


def create_app(model, tokenizer, settings: Optional[ServeSettings] = None) -> FastAPI:
    """A FastAPI app serving `model` (a gptbook GPT) with `tokenizer` (tokenizers.Tokenizer).
    Registers a forward pre-hook on `model` that enforces request deadlines; it does nothing
    outside the app's worker threads, so the model can still be used directly."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    s = settings or ServeSettings()
    s.check(model.config.block_size)
    model.eval()
    model.register_forward_pre_hook(_deadline_hook)
    eos = tokenizer.token_to_id("<|endoftext|>")
    Req = request_model(s, model.config.vocab_size)
    registry = CollectorRegistry()
    m = _metrics(registry)
    slots = threading.BoundedSemaphore(s.max_concurrency)   # admission control
    model_lock = threading.Lock()                           # one generation at a time on the model
    pool = ThreadPoolExecutor(max_workers=s.max_concurrency, thread_name_prefix="gptbook-gen")
    app = FastAPI(title="gptbook", version="0.1.0")
    app.state.settings, app.state.registry = s, registry
    routes = {"/v1/generate", "/healthz", "/metrics"}

    def run(ids, req, deadline):
        """Worker thread: wait for the model, generate, always give the slot back."""
        try:
            if not model_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise GenerationTimeout("waited too long for the model")
            try:
                _worker.deadline = deadline
                gen = None if req.seed is None else torch.Generator().manual_seed(req.seed)
                out = generate(model, torch.tensor([ids]), req.max_new_tokens,
                               temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                               repetition_penalty=req.repetition_penalty, eos_token_id=eos,
                               generator=gen)
                return out[0, len(ids):].tolist()
            finally:
                _worker.deadline = None
                model_lock.release()
        finally:
            slots.release()
            m["in_flight"].dec()

    @app.middleware("http")
    async def guard_and_observe(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        key = request.headers.get("x-api-key", "")
        if path.startswith("/v1/") and s.api_key and not secrets.compare_digest(key, s.api_key):
            response = JSONResponse({"detail": "missing or wrong X-API-Key header"}, status_code=401)
        elif int(request.headers.get("content-length") or 0) > s.max_body_bytes:
            response = JSONResponse({"detail": f"body larger than {s.max_body_bytes} bytes"},
                                    status_code=413)
        else:
            response = await call_next(request)
        code = str(response.status_code)
        m["requests"].labels(path if path in routes else "other", code).inc()
        if response.status_code >= 400:
            m["errors"].labels(code).inc()
        if path == "/v1/generate":
            m["latency"].observe(time.perf_counter() - t0)
        return response

    @app.post("/v1/generate")
    async def generate_endpoint(req: Req):
        t0 = time.perf_counter()
        ids = tokenizer.encode(req.prompt).ids
        if len(ids) > s.max_prompt_tokens:
            raise HTTPException(413, f"prompt is {len(ids)} tokens; the limit is {s.max_prompt_tokens}")
        if not slots.acquire(blocking=False):
            raise HTTPException(429, f"server busy: {s.max_concurrency} requests in flight",
                                headers={"Retry-After": "1"})
        m["in_flight"].inc()
        deadline = time.monotonic() + s.timeout_s
        fut = asyncio.get_running_loop().run_in_executor(pool, run, ids, req, deadline)
        try:
            new = await asyncio.wait_for(fut, timeout=s.timeout_s)
        except (asyncio.TimeoutError, GenerationTimeout):
            # the worker stops at its next forward pass (deadline hook) and frees its slot
            raise HTTPException(504, f"generation took longer than {s.timeout_s} s")
        dt = time.perf_counter() - t0
        m["tokens"].inc(len(new))
        m["tps"].set(len(new) / dt if dt > 0 else 0.0)
        return {"text": tokenizer.decode(new), "prompt_tokens": len(ids),
                "completion_tokens": len(new), "seconds": round(dt, 4)}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "parameters": model.num_params(),
                "block_size": model.config.block_size}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/limits")
    async def limits():
        d = asdict(s)
        d["api_key"] = d["api_key"] is not None
        return d

    app.state.shutdown_pool = pool.shutdown
    return app


def metric_value(app, name: str, labels: Optional[dict] = None) -> float:
    """Current value of one sample in the app's registry (0.0 when not yet recorded)."""
    v = app.state.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


class BackgroundServer:
    """uvicorn serving `app` on a loopback port in a daemon thread: `with BackgroundServer(app) as srv:`
    then `srv.url`. Leaving the block stops the server and waits for the thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn
        if host not in LOOPBACK:
            raise ValueError(f"BackgroundServer binds loopback addresses only {LOOPBACK}, got {host}")
        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                     access_log=False, lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="gptbook-uvicorn")
        self.host, self.url = host, None

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > timeout:
                raise RuntimeError("uvicorn did not start (is the port free?)")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self

    def stop(self, timeout: float = 30.0):
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("uvicorn did not stop in time")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    """`python -m gptbook serve [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--profile quick]`."""
    import argparse

    import uvicorn

    from .. import config, train
    ap = argparse.ArgumentParser(prog="python -m gptbook serve",
                                 description="Serve the book's pre-trained GPT over HTTP.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", default=None, help="require header X-API-Key: KEY on /v1/*")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-concurrency", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args(argv)
    if a.host not in LOOPBACK and not a.api_key:
        ap.error(f"--host {a.host} is reachable from other machines: set --api-key as well")
    cfg = config.setup(a.profile)
    model, tok, _ = train.pretrained(cfg)
    budget = model.config.block_size - a.max_new_tokens
    settings = ServeSettings(max_new_tokens=a.max_new_tokens, max_prompt_tokens=max(1, budget),
                             max_concurrency=a.max_concurrency, timeout_s=a.timeout,
                             api_key=a.api_key)
    print(f"serving on http://{a.host}:{a.port}  (POST /v1/generate, GET /metrics, GET /healthz)")
    uvicorn.run(create_app(model, tok, settings), host=a.host, port=a.port, log_level="info")
    return 0
