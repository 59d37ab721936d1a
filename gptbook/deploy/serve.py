"""The book's GPT behind an HTTP interface (document 000 FAQ Q5: 服务化封装, 监控告警, 安全防护).

create_app(model, tokenizer, settings) -> FastAPI app with
  POST /v1/generate          the book's own route: validated JSON in, generated text out
  POST /v1/completions       OpenAI-compatible text completion (also streamed as server-sent events)
  POST /v1/chat/completions  OpenAI-compatible chat: the messages become a transcript, see chat_prompt
  GET  /v1/models            the one model served (OpenAI format); GET /v1/models/{id}
  GET  /v1/limits            the limits below
  GET  /healthz              liveness and the backend (never needs the API key)
  GET  /metrics              Prometheus text format: requests and errors by code, latency, tokens
Limits: prompt length (chars: 422; tokens: 413 on /v1/generate, 400 context_length_exceeded on the
OpenAI routes), max_new_tokens / max_tokens and sampling ranges (422 / 400), body size (413, also for
chunked bodies, checked while reading), a body that arrives too slowly (408), JSON Content-Type
(422 / 400), API key (401), concurrency (429), time (504). Every answer to a client mistake is a 4xx
with a reason; a 500 means a bug and is counted in /metrics like every other response.

Errors: /v1/generate and /v1/limits answer FastAPI's {"detail": ...}; the OpenAI routes answer
{"error": {"message", "type", "param", "code"}}, the shape OpenAI clients read.

Prompts are not logged unless asked: create_app(..., request_log=RequestLog(path)) (`python -m
gptbook serve --request-log FILE`) appends one JSON line per request to a generation route (streams
too, with the text they sent): time, route, HTTP status, latency, token counts, and the prompt and
completion passed through privacy.mask_pii first, so e-mail addresses, phone, ID and card numbers
never reach the file (names and addresses are not recognised: see privacy.py).

`python -m gptbook serve` runs it with uvicorn, with read timeouts and a connection cap (uvicorn_options);
`--backend onnx` or `onnx-int8` serves the same model from onnxruntime (gptbook.deploy.onnx.backend):
create_app takes any model with the GPT's interface, so validation, limits and metrics are the same.
"""
# no `from __future__ import annotations`: FastAPI must see the request classes defined in create_app
import asyncio
import hmac
import ipaddress
import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Annotated, List, Literal, Optional

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..generate import check_sampling, generate
from ..model import DeadlinePassed
from .onnx import BACKENDS, backend
from .privacy import mask_pii

LOOPBACK = ("127.0.0.1", "localhost", "::1")   # examples; is_loopback() is the rule
log = logging.getLogger("uvicorn.error")       # uvicorn prints this logger, so tracebacks show in its log

# routes named in the metrics' `route` label (anything else counts as "other", so a scan of random
# paths cannot create unbounded label values)
ROUTES = ("/v1/generate", "/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/limits",
          "/healthz", "/metrics")
GENERATION_ROUTES = ("/v1/generate", "/v1/completions", "/v1/chat/completions")   # latency histogram
BOOK_ROUTES = ("/v1/generate", "/v1/limits")   # FastAPI-style {"detail"} errors (chapter 05 reads them)
CHAT_STOP = "\nuser:"                          # a chat reply also ends where the model starts the next user turn
LOG_ENTRY = "gptbook.request_log"              # the scope key where a generation route leaves its log entry


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: localhost, 127.0.0.0/8, ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:   # a host name other than localhost may resolve to anything
        return False


@dataclass(frozen=True)
class ServeSettings:
    max_prompt_chars: int = 2000      # longer prompt strings -> 422 (schema)
    max_prompt_tokens: int = 64       # longer after tokenisation -> 413 (/v1/generate) or 400
    max_new_tokens: int = 64          # upper bound of max_new_tokens / max_tokens -> 422 / 400
    max_temperature: float = 2.0
    timeout_s: float = 10.0           # queueing + generation; longer -> 504
    max_concurrency: int = 8          # requests admitted at once (running + waiting); more -> 429
    max_body_bytes: int = 16_384      # larger bodies -> 413 (Content-Length, or counted while reading)
    api_key: Optional[str] = None     # when set, every route but /healthz needs it (else 401)
    read_timeout_s: float = 10.0      # request headers and body must arrive within this (slow clients)
    max_connections: int = 64         # open connections at once (uvicorn limit_concurrency); more -> 503
    model_name: str = "gptbook"       # the id /v1/models lists and the OpenAI routes accept

    def check(self, block_size: Optional[int] = None):
        """Raise a ValueError naming the first impossible setting (block_size: the model's context)."""
        for name in ("max_prompt_chars", "max_prompt_tokens", "max_new_tokens", "max_concurrency",
                     "max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_temperature", "timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value}")
        if block_size is not None and self.max_prompt_tokens + self.max_new_tokens > block_size:
            raise ValueError(f"max_prompt_tokens + max_new_tokens = "
                             f"{self.max_prompt_tokens + self.max_new_tokens} exceeds the model's "
                             f"block_size={block_size}; lower one of them")


class ApiError(HTTPException):
    """An HTTPException with the OpenAI error fields `param` and `code` (ignored on /v1/generate)."""

    def __init__(self, status_code: int, message: str, param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(status_code, message, headers=headers)
        self.param, self.code = param, code


# ------------------------------------------------------------------ error bodies

def openai_style(path: str) -> bool:
    """The OpenAI routes (and unknown /v1/ paths, where OpenAI clients land) get OpenAI error bodies."""
    return path.startswith("/v1/") and path not in BOOK_ROUTES


def invalid_status(path: str) -> int:
    """The status of an invalid request: 422 as FastAPI answers on /v1/generate, 400 as OpenAI does."""
    return 400 if openai_style(path) else 422


_ERROR_TYPES = {401: "authentication_error", 429: "rate_limit_error", 504: "timeout_error"}


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: error messages can quote client text (an unknown
    field's name), and a lone surrogate there ("\\ud800") cannot be encoded as UTF-8 (the probe's 500)."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def openai_error(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    """OpenAI's error body: in a response, or as the last event of a stream that already sent its 200."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(path: str, status: int, message: str, detail=None, param: Optional[str] = None,
                   code: Optional[str] = None, headers: Optional[dict] = None) -> JSONResponse:
    """The one place error responses are made: {"detail": detail or message} on the book's routes,
    openai_error on the OpenAI ones."""
    if openai_style(path):
        body = openai_error(status, message, param, code)
    else:
        body = {"detail": message if detail is None else detail}
    return SafeJSONResponse(body, status_code=status, headers=headers)


def _header(scope, name: bytes) -> Optional[bytes]:
    """The first value of a request header (raw bytes: a non-ASCII API key is compared as bytes)."""
    return next((v for k, v in scope["headers"] if k == name), None)


def _is_json(content_type: str) -> bool:
    """application/json or application/*+json, with or without parameters (FastAPI's rule)."""
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


# ------------------------------------------------------------------ the guard around the app

class Guard:
    """Pure ASGI middleware around the whole app: API key, body limits, Content-Type, metrics.

    It is not an @app.middleware("http") function: that kind skips its own code when the app raises
    (so 500s were never counted) and sees the body only after it has been read in full. Here the
    body is counted and timed while it arrives, every response (a 500 included) is counted, and an
    unexpected exception becomes a JSON 500 instead of a dropped keep-alive connection."""

    def __init__(self, app, settings: ServeSettings, metrics: dict, request_log: Optional["RequestLog"] = None):
        self.app, self.s, self.m, self.request_log = app, settings, metrics, request_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        status = None

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self.refusal(scope, path)
            if refusal is not None:
                await refusal(scope, receive, send_and_note)
            else:
                await self.app(scope, self.limited(receive, t0), send_and_note)
        except Exception as exc:
            if status is not None:
                # the response had started (a stream): nothing more can be said; uvicorn closes it
                self.record(path, status, t0)
                raise
            if isinstance(exc, StarletteHTTPException):   # raised by limited() outside a route
                response = error_response(path, exc.status_code, str(exc.detail), headers=exc.headers)
            else:
                log.exception("unhandled error on %s", path)
                response = error_response(path, 500, f"internal server error ({type(exc).__name__})",
                                          code="internal_error")
            await response(scope, receive, send_and_note)
        self.record(path, status or 500, t0)
        if self.request_log is not None and LOG_ENTRY in scope:   # after the response: a stream's whole text
            self.request_log.write(path, status or 500, time.perf_counter() - t0, scope[LOG_ENTRY])

    def refusal(self, scope, path: str):
        """A response for a request refused before the app sees it, else None."""
        s = self.s
        if s.api_key and path != "/healthz" and not self.key_ok(scope):
            return error_response(path, 401, "missing or wrong API key (header X-API-Key or "
                                  "Authorization: Bearer)", code="invalid_api_key")
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > s.max_body_bytes:
            return error_response(path, 413, f"body larger than {s.max_body_bytes} bytes",
                                  headers={"Connection": "close"})
        content_type = (_header(scope, b"content-type") or b"").decode("latin-1")
        if scope["method"] == "POST" and path in GENERATION_ROUTES and not _is_json(content_type):
            # Browsers may send a form or text/plain body to another site without asking first
            # (CORS), so only JSON bodies are read. curl -d sends a form type unless told otherwise.
            got = f"is {content_type[:100]!r}" if content_type else "is missing"
            msg = (f"the body must be JSON sent with the header Content-Type: application/json; this "
                   f"request's Content-Type {got} (with curl add -H 'Content-Type: application/json')")
            detail = [{"type": "content_type", "loc": ["header", "content-type"], "msg": msg}]
            return error_response(path, invalid_status(path), msg, detail=detail, param="Content-Type")
        return None

    def key_ok(self, scope) -> bool:
        """X-API-Key: KEY or Authorization: Bearer KEY, compared as bytes in constant time."""
        want = self.s.api_key.encode("utf-8")
        key = _header(scope, b"x-api-key")
        auth = _header(scope, b"authorization") or b""
        bearer = auth[7:].strip() if auth[:7].lower() == b"bearer " else None
        return any(got is not None and hmac.compare_digest(got, want) for got in (key, bearer))

    def limited(self, receive, t0: float):
        """`receive` that refuses a body past max_body_bytes (413) or read_timeout_s (408) while it
        arrives: a chunked body has no Content-Length to check in advance."""
        s, received, done = self.s, 0, False

        async def receive_limited():
            nonlocal received, done
            if done:   # after the body: messages such as http.disconnect pass as they are
                return await receive()
            left = t0 + s.read_timeout_s - time.perf_counter()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except asyncio.TimeoutError:
                raise ApiError(408, f"the request body did not arrive within {s.read_timeout_s} s",
                               headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > s.max_body_bytes:
                    raise ApiError(413, f"body larger than {s.max_body_bytes} bytes",
                                   headers={"Connection": "close"})
                done = not message.get("more_body", False)
            else:
                done = True
            return message
        return receive_limited

    def record(self, path: str, status: int, t0: float):
        code = str(status)
        self.m["requests"].labels(path if path in ROUTES else "other", code).inc()
        if status >= 400:
            self.m["errors"].labels(code).inc()
        if path in GENERATION_ROUTES:
            self.m["latency"].observe(time.perf_counter() - t0)


class RequestLog:
    """The optional request log (--request-log FILE): one JSON line per request that reached a
    generation route with a valid body, written when its response has ended ("time"; "status" is the
    HTTP status, 200 for a stream even if it ended with an error event). Every text goes through
    mask_pii before it is written."""

    def __init__(self, path):
        self.path = str(path)
        # created (or opened) now, so that a path that cannot be written fails at start, with the
        # OSError's reason, not at the first request; 0o600: masked prompts are still users' words
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        self.lock = threading.Lock()

    def write(self, route: str, status: int, seconds: float, entry: dict):
        """entry: what the route left in the scope (prompt; ids and job once they exist)."""
        job = entry.get("job")
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "route": route,
                  "status": status, "seconds": round(seconds, 4),
                  "prompt": mask_pii(entry.get("prompt", "")), "completion": mask_pii(job.text if job else ""),
                  "prompt_tokens": len(entry.get("ids") or ()), "completion_tokens": len(job.new) if job else 0}
        # UTF-8, so that Chinese stays readable (validation refuses lone surrogates, which have no UTF-8)
        line = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            with self.lock, open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
        except OSError as e:   # the answer is sent already; the service goes on without this line
            log.error("request log %s: cannot write (%s)", self.path, e.strerror or e)


def _metrics(registry):
    from prometheus_client import Counter, Gauge, Histogram
    return dict(
        requests=Counter("gptbook_http_requests", "HTTP requests by route and status code",
                         ["route", "code"], registry=registry),
        errors=Counter("gptbook_http_errors", "HTTP responses with status >= 400, by code",
                       ["code"], registry=registry),
        latency=Histogram("gptbook_generate_latency_seconds",
                          "latency of the generation routes (all codes; a stream until its end)",
                          buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=registry),
        tokens=Counter("gptbook_generated_tokens", "new tokens generated", registry=registry),
        # multiprocess_mode (used only under `serve --workers N`): the last request of any worker,
        # and in-flight summed over the workers that are alive
        tps=Gauge("gptbook_tokens_per_second", "new tokens / second of the last request",
                  registry=registry, multiprocess_mode="mostrecent"),
        in_flight=Gauge("gptbook_in_flight", "requests admitted and not finished", registry=registry,
                        multiprocess_mode="livesum"),
    )


# ------------------------------------------------------------------ request bodies

class _Body(BaseModel):
    # unknown fields are refused by name; NaN and +-Infinity (Python's json reads NaN, Infinity and
    # 1e999) are refused as "Input should be a finite number"
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def request_models(s: ServeSettings, vocab_size: int):
    """The pydantic models of the request bodies, with the limits of these settings:
    (GenerateRequest, CompletionRequest, ChatRequest). One definition of each field's range."""
    Prompt = Annotated[str, Field(min_length=1, max_length=s.max_prompt_chars)]
    # strict: "10", 10.0 and true are not token counts
    NewTokens = Annotated[int, Field(ge=1, le=s.max_new_tokens, strict=True)]
    Temperature = Annotated[float, Field(ge=0.0, le=s.max_temperature)]
    Stop = Annotated[str, Field(min_length=1, max_length=100)]

    class Sampling(_Body):
        temperature: Temperature = 0.0   # the book's default: greedy (the OpenAI routes: 1.0)
        top_k: Optional[Annotated[int, Field(ge=1, le=vocab_size, strict=True)]] = None
        top_p: Optional[Annotated[float, Field(gt=0.0, le=1.0)]] = None
        repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] = 1.0
        seed: Optional[Annotated[int, Field(ge=0, le=2**63 - 1, strict=True)]] = None

        @model_validator(mode="after")
        def _sampling(self):
            # the same rules generate() enforces; a ValueError here becomes a 422 / 400
            check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)
            return self

    class GenerateRequest(Sampling):
        prompt: Prompt
        max_new_tokens: NewTokens = min(16, s.max_new_tokens)

    class StreamOptions(_Body):
        include_usage: bool = False

    class OpenAIRequest(Sampling):
        model: Optional[Annotated[str, Field(max_length=200)]] = None
        temperature: Temperature = 1.0   # OpenAI's default
        # a string or a list of up to 4; one string is read as a list of one (one type, clear errors)
        stop: Optional[Annotated[List[Stop], Field(max_length=4),
                                 BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]] = None
        stream: bool = False
        stream_options: Optional[StreamOptions] = None
        n: Annotated[int, Field(ge=1, le=1, strict=True, description="only 1 is supported")] = 1
        user: Optional[str] = None   # accepted and ignored

    class CompletionRequest(OpenAIRequest):
        prompt: Prompt
        max_tokens: NewTokens = min(16, s.max_new_tokens)   # OpenAI's default for completions

    class Message(_Body):
        role: Literal["system", "user", "assistant"]
        content: Prompt
        name: Optional[str] = None   # accepted and ignored

    class ChatRequest(OpenAIRequest):
        messages: Annotated[List[Message], Field(min_length=1)]
        max_tokens: Optional[NewTokens] = None             # default: max_new_tokens
        max_completion_tokens: Optional[NewTokens] = None  # the newer name of max_tokens

    return GenerateRequest, CompletionRequest, ChatRequest


def request_model(s: ServeSettings, vocab_size: int):
    """The pydantic model of a /v1/generate body, with the limits of these settings."""
    return request_models(s, vocab_size)[0]


def chat_prompt(messages) -> str:
    """The chat transcript the model continues: one "role: content" line per message, then
    "assistant:". The book's model was never tuned on chats, so this plain format is as good as any
    and easy to read; the reply ends at EOS, at a stop string or where the model writes "\\nuser:"."""
    return "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"


# ------------------------------------------------------------------ one generation

class Job:
    """One generation, for every route: the worker thread fills it, the event loop reads it.

    Text is decoded as tokens arrive, so that a stream can send it and a stop string can end the
    reply. The end of the text that could still become a stop string, or that ends inside a UTF-8
    character (decoded as U+FFFD), is held back until the next token decides."""

    def __init__(self, tokenizer, eos: Optional[int], ids: list, req, max_new_tokens: int,
                 stops: tuple, deadline: float, loop: asyncio.AbstractEventLoop):
        self.tokenizer, self.eos, self.ids, self.req = tokenizer, eos, ids, req
        self.max_new_tokens, self.stops, self.deadline, self.loop = max_new_tokens, stops, deadline, loop
        self.new: list = []               # generated token ids, EOS included
        self.text = ""                    # reply text released so far (no EOS; cut before a stop string)
        self.finish_reason = "length"     # "stop" after EOS or a stop string
        self.cancelled = False            # set by the event loop: client gone or deadline passed
        self.pieces: asyncio.Queue = asyncio.Queue()   # released text, then None at the end

    def decoded(self) -> str:
        return self.tokenizer.decode([t for t in self.new if t != self.eos])

    def on_token(self, next_ids) -> bool:
        """generate()'s callback after each token; True ends the generation."""
        token = int(next_ids[0, 0])
        self.new.append(token)
        text = self.decoded()
        if token == self.eos:
            self.finish_reason = "stop"
            self.release(text)
            return True
        cuts = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if cuts:
            self.finish_reason = "stop"
            self.release(text[:min(cuts)])
            return True
        hold = len(text) - len(text.rstrip("\ufffd"))
        for stop in self.stops:
            hold = max([hold] + [k for k in range(1, len(stop)) if text.endswith(stop[:k])])
        self.release(text[:len(text) - hold])
        return self.cancelled

    def release(self, text: str):
        """Hand the text past what was released to the event loop."""
        if len(text) > len(self.text):
            piece, self.text = text[len(self.text):], text
            self.loop.call_soon_threadsafe(self.pieces.put_nowait, piece)

    def close(self, ok: bool):
        """After generate(): a reply that ran to its length releases what it held back; None ends it."""
        if ok and self.finish_reason == "length":
            self.release(self.decoded())
        self.loop.call_soon_threadsafe(self.pieces.put_nowait, None)


# ------------------------------------------------------------------ the app

def create_app(model, tokenizer, settings: Optional[ServeSettings] = None,
               request_log: Optional[RequestLog] = None) -> FastAPI:
    """A FastAPI app serving `model` (a gptbook GPT, or onnx.OnnxGPT: anything with the GPT's
    forward, config, num_params and deadline) with `tokenizer` (tokenizers.Tokenizer).
    request_log: where requests to the generation routes are logged, masked (RequestLog); None: nowhere.
    Each generation runs inside `model.deadline(...)`, which stops it at the request's deadline and
    leaves the model as it was, so the model can still be used directly."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    s = settings or ServeSettings()
    s.check(model.config.block_size)
    model.eval()
    eos = tokenizer.token_to_id("<|endoftext|>")
    GenerateRequest, CompletionRequest, ChatRequest = request_models(s, model.config.vocab_size)
    registry = CollectorRegistry()
    m = _metrics(registry)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # `serve --workers N`: each worker writes its samples to that folder; /metrics, answered by
        # whichever worker gets the request, reads all of them (prometheus_client's multiprocess mode)
        from prometheus_client.multiprocess import MultiProcessCollector
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    slots = threading.BoundedSemaphore(s.max_concurrency)   # admission control
    model_lock = threading.Lock()                           # one generation at a time on the model
    pool = ThreadPoolExecutor(max_workers=s.max_concurrency, thread_name_prefix="gptbook-gen")
    created = int(time.time())
    app = FastAPI(title="gptbook", version="0.1.0")
    app.state.settings, app.state.registry = s, registry
    app.add_middleware(Guard, settings=s, metrics=m, request_log=request_log)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(request.url.path, exc.status_code, str(exc.detail), detail=exc.detail,
                              param=getattr(exc, "param", None), code=getattr(exc, "code", None),
                              headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        # FastAPI's default would echo each bad input back: the whole 10 MB prompt of a chunked
        # body, or a NaN / lone surrogate that then fails to render (the probe's 500s)
        errors = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        first = errors[0]
        if first["type"] == "json_invalid":   # loc is ("body", character position)
            param = None
            message = (f"the body is not valid JSON: {exc.errors()[0].get('ctx', {}).get('error', '')} "
                       f"at character {first['loc'][-1]}")
        else:
            param = ".".join(str(x) for x in first["loc"][1:]) or None   # loc starts with "body"
            message = f"{param}: {first['msg']}" if param else first["msg"]
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s))"
        path = request.url.path
        return error_response(path, invalid_status(path), message, detail=errors, param=param)

    def work(job: Job):
        """Worker thread: wait for the model, generate, always give the slot back."""
        ok = False
        try:
            if not model_lock.acquire(timeout=max(0.0, job.deadline - time.monotonic())):
                raise DeadlinePassed("waited too long for the model")
            try:
                if not job.cancelled:
                    r = job.req
                    gen = None if r.seed is None else torch.Generator().manual_seed(r.seed)
                    with model.deadline(job.deadline):
                        generate(model, torch.tensor([job.ids]), job.max_new_tokens,
                                 temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                                 repetition_penalty=r.repetition_penalty, eos_token_id=eos,
                                 generator=gen, on_token=job.on_token)
                    ok = True
            finally:
                model_lock.release()
        finally:
            job.close(ok)
            slots.release()
            m["in_flight"].dec()

    def encode(path: str, prompt: str, param: str = "prompt") -> list:
        """The prompt's token ids; too long: 413 on /v1/generate, 400 context_length_exceeded (OpenAI's
        code) on the OpenAI routes."""
        ids = tokenizer.encode(prompt).ids
        if not ids:
            raise ApiError(invalid_status(path), "the prompt encodes to no tokens", param=param)
        if len(ids) > s.max_prompt_tokens:
            message = f"prompt is {len(ids)} tokens; the limit is {s.max_prompt_tokens}"
            if openai_style(path):
                raise ApiError(400, message, param=param, code="context_length_exceeded")
            raise HTTPException(413, message)
        return ids

    def start(ids: list, req, max_new_tokens: int, stops: tuple = ()) -> tuple:
        """Admit a request (429 when full) and start its generation on a worker thread."""
        if not slots.acquire(blocking=False):
            raise ApiError(429, f"server busy: {s.max_concurrency} requests in flight",
                           code="rate_limit_exceeded", headers={"Retry-After": "1"})
        m["in_flight"].inc()
        loop = asyncio.get_running_loop()
        job = Job(tokenizer, eos, ids, req, max_new_tokens, stops, time.monotonic() + s.timeout_s, loop)
        fut = loop.run_in_executor(pool, work, job)
        # a stream that ended early never awaits its future: mark the worker's exception as seen, or
        # asyncio logs "Future exception was never retrieved" (awaiting it still raises it)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return job, fut

    def count(job: Job, t0: float):
        dt = time.perf_counter() - t0
        m["tokens"].inc(len(job.new))
        m["tps"].set(len(job.new) / dt if dt > 0 else 0.0)

    async def finish(job: Job, fut, t0: float):
        """Wait for a generation that is answered in one piece; 504 past the deadline."""
        try:
            await asyncio.wait_for(fut, timeout=max(0.0, job.deadline - time.monotonic()))
        except (asyncio.TimeoutError, DeadlinePassed):
            # the worker stops at its next forward pass (deadline hook) and frees its slot
            job.cancelled = True
            raise ApiError(504, f"generation took longer than {s.timeout_s} s", code="timeout")
        count(job, t0)

    def log_entry(request: Request, prompt: str) -> dict:
        """This request's entry for the request log, which Guard writes after the response; the
        route adds the ids and the job as they come (a request refused on the way is logged too)."""
        entry = request.scope[LOG_ENTRY] = {"prompt": prompt}
        return entry

    @app.post("/v1/generate")
    async def generate_endpoint(req: GenerateRequest, request: Request):
        t0 = time.perf_counter()
        entry = log_entry(request, req.prompt)
        ids = entry["ids"] = encode("/v1/generate", req.prompt)
        job, fut = start(ids, req, req.max_new_tokens)
        entry["job"] = job
        await finish(job, fut, t0)
        return {"text": tokenizer.decode(job.new), "prompt_tokens": len(ids),
                "completion_tokens": len(job.new), "seconds": round(time.perf_counter() - t0, 4)}

    async def openai_reply(request: Request, path: str, req, prompt: str, max_tokens: int, stops: tuple,
                           chat: bool):
        """/v1/completions and /v1/chat/completions: one answer, or server-sent events when stream."""
        t0 = time.perf_counter()
        entry = log_entry(request, prompt)
        if req.model is not None and req.model != s.model_name:
            raise ApiError(404, f"the model {req.model!r} does not exist; this server serves "
                                f"{s.model_name!r}", param="model", code="model_not_found")
        ids = entry["ids"] = encode(path, prompt, "messages" if chat else "prompt")
        job, fut = start(ids, req, max_tokens, stops)
        entry["job"] = job
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        head = {"id": rid, "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": s.model_name}

        def usage():
            return {"prompt_tokens": len(ids), "completion_tokens": len(job.new),
                    "total_tokens": len(ids) + len(job.new)}

        def choice(text: str, finish: Optional[str], delta: bool):
            if not chat:
                return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            if delta:
                return {"index": 0, "delta": {"content": text} if text else {}, "logprobs": None,
                        "finish_reason": finish}
            return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": finish}

        if not req.stream:
            await finish(job, fut, t0)
            return {**head, "choices": [choice(job.text, job.finish_reason, False)], "usage": usage()}

        chunk_head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

        def event(body: dict) -> str:
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        async def events():
            try:
                if chat:   # OpenAI's first chunk names the role
                    yield event({**chunk_head, "choices": [{"index": 0, "delta": {"role": "assistant",
                                 "content": ""}, "logprobs": None, "finish_reason": None}]})
                while (piece := await asyncio.wait_for(
                        job.pieces.get(), timeout=max(0.0, job.deadline - time.monotonic()))) is not None:
                    yield event({**chunk_head, "choices": [choice(piece, None, True)]})
                await fut   # the worker's exception, if it had one
                count(job, t0)
                yield event({**chunk_head, "choices": [choice("", job.finish_reason, True)]})
                if req.stream_options is not None and req.stream_options.include_usage:
                    yield event({**chunk_head, "choices": [], "usage": usage()})
                yield "data: [DONE]\n\n"
            except (asyncio.TimeoutError, DeadlinePassed):
                # the status line (200) is already sent: report in the stream, as OpenAI does
                yield event(openai_error(504, f"generation took longer than {s.timeout_s} s", code="timeout"))
            except Exception as exc:
                log.exception("stream failed on %s", path)
                yield event(openai_error(500, f"internal server error ({type(exc).__name__})",
                                         code="internal_error"))
            finally:
                job.cancelled = True   # done, or the client went away: the worker stops at its next token

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        return await openai_reply(request, "/v1/completions", req, req.prompt, req.max_tokens,
                                  tuple(req.stop or ()),
                                  chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise ApiError(400, "give max_tokens or max_completion_tokens, not both",
                           param="max_completion_tokens")
        max_tokens = req.max_completion_tokens or req.max_tokens or s.max_new_tokens
        return await openai_reply(request, "/v1/chat/completions", req, chat_prompt(req.messages), max_tokens,
                                  tuple(req.stop or ()) + (CHAT_STOP,), chat=True)

    def model_card():
        return {"id": s.model_name, "object": "model", "created": created, "owned_by": "gptbook"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model_info(model_id: str):
        if model_id != s.model_name:
            raise ApiError(404, f"the model {model_id!r} does not exist; this server serves "
                                f"{s.model_name!r}", param="model", code="model_not_found")
        return model_card()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "parameters": model.num_params(),
                "block_size": model.config.block_size, "backend": getattr(model, "name", "torch")}

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


# ------------------------------------------------------------------ running it with uvicorn

def _h11_with_header_timeout(seconds: float):
    """uvicorn's h11 protocol plus a deadline for request headers. uvicorn has none: its keep-alive
    timer stops at the first byte, so a client sending headers a byte at a time (slowloris) held its
    connection for as long as it liked. The body's deadline is Guard.limited's."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11WithHeaderTimeout(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def on_response_complete(self):
            super().on_response_complete()
            self._header_timer.cancel()   # the next request's headers get a fresh deadline
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _headers_too_slow(self):
            # no request yet, or the last one answered: the client is still sending headers (or idle)
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc):
            self._header_timer.cancel()
            super().connection_lost(exc)

    return H11WithHeaderTimeout


def __getattr__(name):
    # `serve --workers N` hands uvicorn the protocol by name (its worker processes are spawned, and a
    # class made inside a function cannot be sent to them); the deadline comes from the environment
    if name == "WorkerH11":
        return _h11_with_header_timeout(float(os.environ.get(_WORKER_ENV + "_READ_TIMEOUT", "10")))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_WORKER_ENV = "GPTBOOK_SERVE_WORKER"


def _served_app(profile: str, weights: str, backend_name: str, threads: int, workdir: str,
                settings: ServeSettings, request_log: Optional[RequestLog]) -> FastAPI:
    """The app `serve` runs: the profile's pre-trained model (`weights`) on `backend_name`, with
    `threads` CPU threads (0: the profile's), ONNX files (if any) in workdir. Shared by the
    one-process server and by each worker of `serve --workers N`."""
    from .. import config, train
    cfg = config.setup(profile)
    if threads:
        torch.set_num_threads(threads)
    model, tok, _ = train.pretrained(cfg, weights=weights)
    served = backend(model.cpu().eval(), backend_name, workdir, threads=threads or cfg.threads or 0)
    return create_app(served, tok, settings, request_log)


def worker_app():
    """The app of one worker process of `serve --workers N` (uvicorn calls it in each process): the
    options main() put in $GPTBOOK_SERVE_WORKER; each worker loads its own copy of the model and uses
    its share of the CPU threads."""
    import atexit
    import shutil
    opts = json.loads(os.environ[_WORKER_ENV])
    workdir = tempfile.mkdtemp(prefix="gptbook-serve-")       # the ONNX files, if any; removed at exit
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    request_log = RequestLog(opts["request_log"]) if opts["request_log"] else None
    return _served_app(opts["profile"], opts["weights"], opts["backend"], opts["threads"], workdir,
                       ServeSettings(**opts["settings"]), request_log)


def uvicorn_options(settings: ServeSettings) -> dict:
    """uvicorn.Config keywords for these settings, shared by `serve` and BackgroundServer."""
    return dict(
        http=_h11_with_header_timeout(settings.read_timeout_s),   # h11, whatever else is installed
        timeout_keep_alive=5,                           # close idle keep-alive connections after 5 s
        limit_concurrency=settings.max_connections,     # more open connections or tasks -> 503
        h11_max_incomplete_event_size=16_384,           # request line + headers at most 16 KiB
        timeout_graceful_shutdown=5,
    )


class BackgroundServer:
    """uvicorn serving `app` on a loopback port in a daemon thread: `with BackgroundServer(app) as srv:`
    then `srv.url`. Leaving the block stops the server and waits for the thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn
        if not is_loopback(host):
            raise ValueError(f"BackgroundServer binds loopback addresses only (127.0.0.0/8, ::1, "
                             f"localhost), got {host}")
        settings = getattr(getattr(app, "state", None), "settings", None) or ServeSettings()
        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                     access_log=False, lifespan="off", **uvicorn_options(settings))
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
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}"
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
    """`python -m gptbook serve [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--profile quick] ...`.
    Impossible settings are refused with one line (exit 2) before the model loads."""
    import argparse

    import uvicorn

    from .. import config, train
    ap = argparse.ArgumentParser(prog="python -m gptbook serve",
                                 description="Serve the book's pre-trained GPT over HTTP: /v1/generate, "
                                             "OpenAI-compatible /v1/completions, /v1/chat/completions "
                                             "and /v1/models, /metrics, /healthz.")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1); any but loopback (127.0.0.0/8, ::1, "
                         "localhost) needs --api-key")
    ap.add_argument("--port", type=int, default=8000, help="TCP port, 1-65535 (default 8000)")
    ap.add_argument("--api-key", default=None,
                    help="require X-API-Key: KEY or Authorization: Bearer KEY on every route but /healthz")
    ap.add_argument("--profile", default="quick", choices=sorted(config.PROFILES),
                    help="whose pre-trained model to serve (default quick; trained by chapter 03)")
    ap.add_argument("--max-new-tokens", type=int, default=64,
                    help="most tokens one request may generate (default 64)")
    ap.add_argument("--max-prompt-tokens", type=int, default=None,
                    help="longest prompt in tokens (default: the rest of the model's context)")
    ap.add_argument("--max-concurrency", type=int, default=8,
                    help="requests admitted at once; more get 429 (default 8)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds a request may queue and generate; longer gets 504 (default 10)")
    ap.add_argument("--backend", default="torch", choices=BACKENDS,
                    help="what runs the model: torch (PyTorch eager, default), onnx (onnxruntime fp32) or "
                         "onnx-int8 (onnxruntime, int8 weights); the ONNX ones export the model at start")
    ap.add_argument("--request-log", default=None, metavar="FILE",
                    help="append one JSON line per generation request to FILE (time, route, status, latency, "
                         "token counts, prompt and completion with e-mail addresses, phone, ID and card "
                         "numbers masked); default: prompts are not logged")
    ap.add_argument("--weights", default=train.SHIPPED,
                    help="which pre-trained model: book-broad (default: shipped in the repository, no training "
                         "needed; the model chapter 05 measures), book (trained by chapter 03 §1), gpt2 ... "
                         "gpt2-xl (the Hugging Face hub) or a folder with a Hugging Face GPT-2 checkpoint")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes, each with its own copy of the model and an equal share of the "
                         "CPU threads (default 1); /metrics sums over them")
    a = ap.parse_args(argv)
    if not 1 <= a.workers <= 64:
        ap.error(f"--workers must be in 1..64, got {a.workers}")
    if not 1 <= a.port <= 65535:
        ap.error(f"--port must be in 1..65535, got {a.port}")
    if not is_loopback(a.host) and not a.api_key:
        ap.error(f"--host {a.host} is reachable from other machines: set --api-key as well")
    block_size = config.get_profile(a.profile).block_size   # the model's context, before loading it
    prompt_tokens = block_size - a.max_new_tokens if a.max_prompt_tokens is None else a.max_prompt_tokens
    settings = ServeSettings(max_new_tokens=a.max_new_tokens, max_prompt_tokens=prompt_tokens,
                             max_concurrency=a.max_concurrency, timeout_s=a.timeout,
                             api_key=a.api_key or None,
                             model_name={"book": f"gptbook-{a.profile}", train.SHIPPED: f"gptbook-{a.profile}-broad"}
                             .get(a.weights, os.path.basename(os.path.normpath(a.weights))))
    try:
        if a.max_new_tokens >= block_size:
            raise ValueError(f"--max-new-tokens {a.max_new_tokens} leaves no room for a prompt in the "
                             f"model's context of {block_size} tokens; use at most {block_size - 1}")
        settings.check(block_size)
    except ValueError as e:
        # name the option the user typed: "max_new_tokens must be >= 1" -> "--max-new-tokens must be >= 1"
        name, _, rest = str(e).partition(" ")
        flags = {"max_new_tokens": "--max-new-tokens", "max_prompt_tokens": "--max-prompt-tokens",
                 "max_concurrency": "--max-concurrency", "timeout_s": "--timeout"}
        ap.error(f"{flags.get(name, name)} {rest}")
    try:
        request_log = RequestLog(a.request_log) if a.request_log else None
    except OSError as e:
        ap.error(f"--request-log {a.request_log}: cannot write it ({e.strerror or e})")
    if a.workers > 1:
        return _serve_workers(a, settings)
    with tempfile.TemporaryDirectory(prefix="gptbook-serve-") as workdir:   # the ONNX files, if any
        if a.backend != "torch":
            print(f"exporting the model to ONNX ({a.backend}) ...", flush=True)
        app = _served_app(a.profile, a.weights, a.backend, 0, workdir, settings, request_log)
        print(f"serving {settings.model_name} ({a.backend}) on http://{a.host}:{a.port}  (POST /v1/generate, "
              f"/v1/completions, /v1/chat/completions; GET /v1/models, /metrics, /healthz)")
        uvicorn.run(app, host=a.host, port=a.port, log_level="info", **uvicorn_options(settings))
    return 0


def _serve_workers(a, settings: ServeSettings) -> int:
    """`serve --workers N`: uvicorn's own supervisor runs N processes on one socket (it restarts a
    worker that dies); each builds its app with worker_app(). The model must load before workers
    start, so a missing model is reported here, once, with the usual message."""
    import uvicorn

    from .. import config, train
    cfg = config.setup(a.profile)
    train.pretrained(cfg, weights=a.weights)    # trains or fails here, once, not in every worker
    threads = max(1, (cfg.threads or os.cpu_count() or 1) // a.workers)
    with tempfile.TemporaryDirectory(prefix="gptbook-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.environ[_WORKER_ENV + "_READ_TIMEOUT"] = str(settings.read_timeout_s)
        os.environ[_WORKER_ENV] = json.dumps({"profile": a.profile, "weights": a.weights, "backend": a.backend,
                                              "threads": threads,
                                              "request_log": a.request_log, "settings": asdict(settings)})
        print(f"serving {settings.model_name} ({a.backend}) on http://{a.host}:{a.port} with {a.workers} "
              f"worker processes, {threads} thread(s) each", flush=True)
        options = uvicorn_options(settings)
        options["http"] = f"{__name__}:WorkerH11"      # by name: the workers are spawned processes
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=a.workers, host=a.host, port=a.port,
                    log_level="info", **options)
    return 0
