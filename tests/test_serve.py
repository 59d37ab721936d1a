"""The HTTP service, exercised with real clients: TestClient in-process, httpx against uvicorn."""
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from collections import Counter
from types import SimpleNamespace

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from gptbook.deploy import serve
from gptbook.generate import generate
from gptbook.model import GPT, GPTConfig


class CharTokenizer:
    """The three methods serve.create_app needs, over a 64-token vocabulary (0 = EOS)."""

    def encode(self, text):
        return SimpleNamespace(ids=[2 + ord(c) % 62 for c in text])

    def decode(self, ids):
        return "".join(chr(ord("0") + i % 62) for i in ids)

    def token_to_id(self, token):
        return 0 if token == "<|endoftext|>" else None


SETTINGS = serve.ServeSettings(max_prompt_tokens=8, max_new_tokens=8, max_prompt_chars=100,
                               max_body_bytes=2000, timeout_s=20.0, max_concurrency=4)


def slow(model, seconds):
    """Make every forward pass take at least `seconds` (a stand-in for a big model)."""
    model.register_forward_pre_hook(lambda m, a: time.sleep(seconds))
    return model


def post(client, body, **kw):
    return client.post("/v1/generate", json=body, **kw)


def test_200_and_the_text_is_generate_s(tiny_model):
    tok = CharTokenizer()
    with TestClient(serve.create_app(tiny_model, tok, SETTINGS)) as c:
        r = post(c, {"prompt": "hi there", "max_new_tokens": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prompt_tokens"] == 8 and 1 <= body["completion_tokens"] <= 5
        ids = torch.tensor([tok.encode("hi there").ids])
        ref = generate(tiny_model, ids, 5, temperature=0.0, eos_token_id=0)[0, 8:].tolist()
        assert body["text"] == tok.decode(ref[:body["completion_tokens"]])
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/v1/limits").json()["max_new_tokens"] == 8
    assert not tiny_model._forward_pre_hooks    # the deadline check lives only as long as a generation


def test_seeded_sampling_repeats(tiny_model):
    with TestClient(serve.create_app(tiny_model, CharTokenizer(), SETTINGS)) as c:
        body = {"prompt": "abc", "max_new_tokens": 8, "temperature": 1.0, "top_k": 10, "seed": 7}
        assert post(c, body).json()["text"] == post(c, body).json()["text"]


def test_401_without_the_api_key(tiny_model):
    s = serve.ServeSettings(**{**SETTINGS.__dict__, "api_key": "s3cret"})
    with TestClient(serve.create_app(tiny_model, CharTokenizer(), s)) as c:
        assert post(c, {"prompt": "a"}).status_code == 401
        assert post(c, {"prompt": "a"}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert post(c, {"prompt": "a"}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/limits").status_code == 401
        limits = c.get("/v1/limits", headers={"X-API-Key": "s3cret"}).json()
        assert limits["api_key"] is True                          # never echoes the key


@pytest.mark.parametrize("body,code", [
    ({"prompt": "123456789"}, 413),                           # 9 tokens > max_prompt_tokens=8
    ({"prompt": "x" * 101}, 422),                             # > max_prompt_chars
    ({"prompt": ""}, 422),
    ({}, 422),                                                # prompt missing
    ({"prompt": "a", "max_new_tokens": 9}, 422),             # > max_new_tokens
    ({"prompt": "a", "max_new_tokens": 0}, 422),
    ({"prompt": "a", "temperature": -1}, 422),
    ({"prompt": "a", "temperature": 5}, 422),                 # > max_temperature
    ({"prompt": "a", "top_p": 0}, 422),
    ({"prompt": "a", "top_k": 0}, 422),
    ({"prompt": "a", "repetition_penalty": 0}, 422),
    ({"prompt": "a", "stream": True}, 422),                   # unknown field
    ({"prompt": 42}, 422),                                    # wrong type
])
def test_4xx_for_bad_requests_and_the_server_keeps_serving(tiny_model, body, code):
    with TestClient(serve.create_app(tiny_model, CharTokenizer(), SETTINGS)) as c:
        assert post(c, body).status_code == code
        assert post(c, {"prompt": "ok"}).status_code == 200


def test_malformed_json_and_oversized_body(tiny_model):
    with TestClient(serve.create_app(tiny_model, CharTokenizer(), SETTINGS)) as c:
        r = c.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert c.post("/v1/generate", content=b"x" * 3000).status_code == 413


def test_metrics_counters_move(tiny_model):
    app = serve.create_app(tiny_model, CharTokenizer(), SETTINGS)
    with TestClient(app) as c:
        ok = {"route": "/v1/generate", "code": "200"}
        before = serve.metric_value(app, "gptbook_http_requests_total", ok)
        post(c, {"prompt": "a", "max_new_tokens": 3})
        post(c, {"prompt": "a", "max_new_tokens": 99})
        assert serve.metric_value(app, "gptbook_http_requests_total", ok) == before + 1
        assert serve.metric_value(app, "gptbook_http_errors_total", {"code": "422"}) == 1
        assert serve.metric_value(app, "gptbook_generate_latency_seconds_count") == 2
        assert serve.metric_value(app, "gptbook_generated_tokens_total") >= 1
        text = c.get("/metrics").text
        assert "gptbook_generate_latency_seconds_bucket" in text and "gptbook_tokens_per_second" in text
        assert serve.metric_value(app, "gptbook_in_flight") == 0


def test_settings_must_fit_the_context(tiny_model):
    with pytest.raises(ValueError, match="block_size"):
        serve.create_app(tiny_model, CharTokenizer(), serve.ServeSettings(max_prompt_tokens=10, max_new_tokens=10))


@pytest.mark.slow
def test_429_when_full_over_real_http(tiny_model):
    s = serve.ServeSettings(**{**SETTINGS.__dict__, "max_concurrency": 1})
    app = serve.create_app(slow(tiny_model, 0.05), CharTokenizer(), s)
    codes = []
    with serve.BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        def call():
            r = c.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 8})
            codes.append(r.status_code)
            assert r.status_code != 429 or r.headers["retry-after"] == "1"
        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes)[0] == 200 and 429 in codes
        assert c.get("/healthz").status_code == 200
    assert not srv.thread.is_alive()


@pytest.mark.slow
def test_504_on_timeout_and_the_slot_comes_back(tiny_model):
    s = serve.ServeSettings(**{**SETTINGS.__dict__, "timeout_s": 0.3, "max_concurrency": 1})
    app = serve.create_app(slow(tiny_model, 0.1), CharTokenizer(), s)
    with serve.BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 8})
        assert r.status_code == 504
        time.sleep(0.3)   # the worker stops at its next forward pass and frees the only slot
        assert c.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 1}).status_code == 200
        assert serve.metric_value(app, "gptbook_http_errors_total", {"code": "504"}) == 1
        # a stream has sent its 200 already: the timeout arrives as an error event, as OpenAI's do
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 8, "temperature": 0, "stream": True})
        assert r.status_code == 200 and json.loads(sse(r.text)[-1])["error"]["code"] == "timeout"
        time.sleep(0.3)
        assert c.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 1}).status_code == 200


def test_only_loopback():
    with pytest.raises(ValueError, match="loopback"):
        serve.BackgroundServer(object(), host="0.0.0.0")
    with pytest.raises(SystemExit):
        serve.main(["--host", "0.0.0.0"])


# ------------------------------------------------------------------ inputs that once gave 500s

def raw(client, path, body: bytes, **headers):
    return client.post(path, content=body, headers={"content-type": "application/json", **headers})


@pytest.mark.parametrize("body", [
    b'{"prompt": "a", "temperature": NaN}',             # Python's json reads NaN, Infinity, 1e999
    b'{"prompt": "a", "temperature": Infinity}',
    b'{"prompt": "a", "temperature": -Infinity}',
    b'{"prompt": "a", "top_p": NaN}',
    b'{"prompt": "a", "repetition_penalty": NaN}',
    b'{"prompt": "a", "repetition_penalty": Infinity}',
    b'{"prompt": "a", "temperature": 1e999}',
    b'{"prompt": "a\\ud800b"}',                          # a lone surrogate: valid JSON, not valid text
    b'{"prompt": "a", "\\udfff": 1}',                    # ... in an unknown field's name, quoted by the 422
    b'{"prompt": "a", "max_new_tokens": "3"}',          # strict: strings and booleans are not counts
    b'{"prompt": "a", "max_new_tokens": true}',
    b'[' * 5000,                                         # nested past Python's recursion limit
    b'{"prompt": "a", "seed": 1e400}',
])
def test_non_finite_numbers_surrogates_and_nesting_get_4xx(tiny_model, body):
    with TestClient(serve.create_app(tiny_model, CharTokenizer(), SETTINGS)) as c:
        r = raw(c, "/v1/generate", body)
        assert 400 <= r.status_code < 500, r.text
        assert len(r.content) < 1000                     # the error names the problem, it does not echo input
        assert post(c, {"prompt": "ok"}).status_code == 200


@pytest.mark.parametrize("body", [
    {"prompt": "ab", "temperature": 1e-40},              # logits / t overflows float32
    {"prompt": "ab", "temperature": 5e-324},             # 0 in float32
    {"prompt": "ab", "temperature": 1.0, "repetition_penalty": 1e-300},
    {"prompt": "ab", "temperature": 2.0, "repetition_penalty": 1e-300, "top_p": 1e-12},
])
def test_extreme_sampling_values_sample(tiny_model, body):
    with TestClient(serve.create_app(tiny_model, CharTokenizer(), SETTINGS)) as c:
        r = post(c, {**body, "max_new_tokens": 8})
        assert r.status_code == 200, r.text


def test_a_form_body_is_refused_with_the_content_type_named(tiny_model):
    """The chapter's `curl -d '{...}'` without -H sends application/x-www-form-urlencoded."""
    with TestClient(serve.create_app(tiny_model, CharTokenizer(), SETTINGS)) as c:
        r = c.post("/v1/generate", content=b'{"prompt": "hi"}',
                   headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 422
        msg = r.json()["detail"][0]["msg"]
        assert "application/x-www-form-urlencoded" in msg and "Content-Type: application/json" in msg
        assert "missing" in c.post("/v1/generate", content=b'{"prompt": "hi"}').json()["detail"][0]["msg"]
        assert raw(c, "/v1/generate", b'{"prompt": "hi"}').status_code == 200
        r = raw(c, "/v1/generate", b'{"prompt": "hi"}', **{"content-type": "application/json; charset=utf-8"})
        assert r.status_code == 200


def test_the_api_key_guards_every_route_but_healthz(tiny_model):
    s = serve.ServeSettings(**{**SETTINGS.__dict__, "api_key": "s3cret"})
    with TestClient(serve.create_app(tiny_model, CharTokenizer(), s)) as c:
        for path in ("/metrics", "/docs", "/openapi.json", "/v1/models", "/v1/limits"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
            assert c.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200, path
        assert c.get("/healthz").status_code == 200
        for key in ("sécret".encode(), b"s3cret\xe9", b""):   # non-ASCII bytes are compared, not a 500
            assert post(c, {"prompt": "a"}, headers={"X-API-Key": key}).status_code == 401
        assert post(c, {"prompt": "a"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = c.post("/v1/completions", json={"prompt": "a"}, headers={"Authorization": "Basic s3cret"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_a_500_is_json_counted_and_the_server_goes_on(tiny_model):
    app = serve.create_app(tiny_model, CharTokenizer(), SETTINGS)
    broken = {"on": True}

    def bug(module, args):
        if broken["on"]:
            raise RuntimeError("a bug in the model")
    tiny_model.register_forward_pre_hook(bug)
    with TestClient(app) as c:
        r = post(c, {"prompt": "a"})
        assert r.status_code == 500 and "RuntimeError" in r.json()["detail"]
        assert serve.metric_value(app, "gptbook_http_requests_total", {"route": "/v1/generate", "code": "500"}) == 1
        assert serve.metric_value(app, "gptbook_http_errors_total", {"code": "500"}) == 1
        assert serve.metric_value(app, "gptbook_generate_latency_seconds_count") == 1
        assert 'code="500"' in c.get("/metrics").text
        broken["on"] = False
        assert post(c, {"prompt": "a"}).status_code == 200
        assert serve.metric_value(app, "gptbook_in_flight") == 0


def test_settings_and_cli_refuse_impossible_values(capsys):
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        serve.ServeSettings(max_new_tokens=0).check()
    with pytest.raises(ValueError, match="timeout_s"):
        serve.ServeSettings(timeout_s=float("nan")).check()
    for argv, says in [(["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
                       (["--max-new-tokens", "-5"], "--max-new-tokens must be >= 1"),
                       (["--max-new-tokens", "500"], "leaves no room for a prompt"),
                       (["--max-prompt-tokens", "100"], "exceeds the model's block_size"),
                       (["--max-concurrency", "0"], "--max-concurrency must be >= 1"),
                       (["--timeout", "0"], "--timeout must be a number > 0"),
                       (["--timeout", "-1"], "--timeout must be a number > 0"),
                       (["--timeout", "nan"], "--timeout must be a number > 0"),
                       (["--port", "99999"], "--port must be in 1..65535"),
                       (["--port", "0"], "--port must be in 1..65535"),
                       (["--profile", "bogus"], "invalid choice: 'bogus'"),
                       (["--host", "0.0.0.0"], "set --api-key"),
                       (["--host", "::"], "set --api-key")]:
        with pytest.raises(SystemExit) as e:
            serve.main(argv)      # refused before the model loads
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and "Traceback" not in err, (argv, err)
        assert err.strip().splitlines()[-1].startswith("python -m gptbook serve: error:")
    assert all(serve.is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "localhost"))
    assert not any(serve.is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org", "128.0.0.1"))


def test_uvicorn_gets_timeouts_and_a_connection_cap():
    opts = serve.uvicorn_options(serve.ServeSettings(max_connections=32, read_timeout_s=3.0))
    assert opts["limit_concurrency"] == 32 and opts["timeout_keep_alive"] > 0
    assert opts["h11_max_incomplete_event_size"] == 16_384
    assert opts["http"].__name__ == "H11WithHeaderTimeout"


# ------------------------------------------------------------------ the OpenAI-compatible routes

AI = serve.ServeSettings(max_prompt_tokens=40, max_new_tokens=16, max_prompt_chars=200,
                         max_body_bytes=4000, timeout_s=20.0, max_concurrency=4, model_name="tiny")


@pytest.fixture
def chat_model():
    """Like tiny_model with room for a short chat transcript (block_size 64)."""
    return GPT(GPTConfig(vocab_size=64, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()


def eos_after(model, n: int):
    """From the (n+1)-th forward pass on, make EOS (token 0) the only likely token."""
    calls = {"n": 0}

    def hook(module, args, logits):
        calls["n"] += 1
        if calls["n"] > n:
            logits = logits.clone()
            logits[..., 0] = 1e4
        return logits
    model.lm_head.register_forward_hook(hook)
    return model


def sse(text: str) -> list:
    """The `data:` payloads of a server-sent-event stream."""
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def test_completions_stop_strings_eos_and_finish_reason(chat_model):
    tok = CharTokenizer()
    with TestClient(serve.create_app(chat_model, tok, AI)) as c:
        full = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 12, "temperature": 0}).json()
        assert full["object"] == "text_completion" and full["model"] == "tiny"
        text = full["choices"][0]["text"]
        assert full["choices"][0]["finish_reason"] == "length" and len(text) == 12
        assert full["usage"] == {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}
        # the greedy reply is fixed, so a piece of it is a stop string that must end it early
        stop = text[4:6]
        r = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 12, "temperature": 0,
                                            "stop": ["zzzz", stop]}).json()
        assert r["choices"][0] == {"index": 0, "text": text[:text.index(stop)], "logprobs": None,
                                   "finish_reason": "stop"}
        # the same reply streamed: the pieces add up to the text, then a finish chunk, then [DONE]
        r = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 12, "temperature": 0,
                                            "stop": stop, "stream": True,
                                            "stream_options": {"include_usage": True}})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.text)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(ch["choices"][0]["text"] for ch in chunks if ch["choices"]) == text[:text.index(stop)]
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 5
    with TestClient(serve.create_app(eos_after(chat_model, 3), tok, AI)) as c:
        r = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 12, "temperature": 0}).json()
        assert r["choices"][0]["finish_reason"] == "stop" and r["choices"][0]["text"] == text[:3]
        assert r["usage"]["completion_tokens"] == 4          # the EOS token counts, its text does not


def test_chat_is_a_role_transcript_and_streams(chat_model):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert serve.chat_prompt([SimpleNamespace(**m) for m in msgs]) == "system: be brief\nuser: hi\nassistant:"
    with TestClient(serve.create_app(chat_model, CharTokenizer(), AI)) as c:
        body = {"model": "tiny", "messages": msgs, "max_tokens": 6, "temperature": 0}
        r = c.post("/v1/chat/completions", json=body).json()
        assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
        reply = r["choices"][0]["message"]
        assert reply["role"] == "assistant" and r["choices"][0]["finish_reason"] == "length"
        events = sse(c.post("/v1/chat/completions", json={**body, "stream": True}).text)
        chunks = [json.loads(e) for e in events[:-1]]
        assert events[-1] == "[DONE]" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks) == reply["content"]
        assert {ch["object"] for ch in chunks} == {"chat.completion.chunk"}
        # max_completion_tokens is the newer name of max_tokens
        r = c.post("/v1/chat/completions", json={"messages": msgs, "max_completion_tokens": 2}).json()
        assert r["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize("path,body,code,param", [
    ("/v1/completions", {"prompt": "a", "temperature": 3}, 400, "temperature"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 17}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "n": 2}, 400, "n"),
    ("/v1/completions", {"prompt": "a", "stop": ["1", "2", "3", "4", "5"]}, 400, "stop"),
    ("/v1/completions", {"prompt": "a", "logit_bias": {}}, 400, "logit_bias"),
    ("/v1/completions", {"prompt": "a", "model": "gpt-4"}, 404, "model"),
    ("/v1/completions", {"prompt": "x" * 41}, 400, "prompt"),                  # 41 tokens > 40
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "a"}]}, 400, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "max_tokens": 2,
                              "max_completion_tokens": 2}, 400, "max_completion_tokens"),
])
def test_openai_errors_have_the_openai_shape(chat_model, path, body, code, param):
    with TestClient(serve.create_app(chat_model, CharTokenizer(), AI)) as c:
        r = c.post(path, json=body)
        assert r.status_code == code, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
        assert err["type"] == "invalid_request_error" and err["message"]
        if param == "prompt":
            assert err["code"] == "context_length_exceeded"


def test_models_route(chat_model):
    with TestClient(serve.create_app(chat_model, CharTokenizer(), AI)) as c:
        assert c.get("/v1/models").json()["data"][0]["id"] == "tiny"
        assert c.get("/v1/models/tiny").json()["object"] == "model"
        assert c.get("/v1/models/other").json()["error"]["code"] == "model_not_found"


# ------------------------------------------------------------------ the request log (--request-log)

# personal data of four kinds, each a real match of privacy.mask_pii: the resident ID's check digit and
# the card number's Luhn digit are right (computed, nobody's)
PII = {"zhang.san@example.com": "[EMAIL]", "13812345678": "[PHONE]", "11010519491231002X": "[ID]",
       "4111 1111 1111 1111": "[CARD]"}
PII_PROMPT = "mail zhang.san@example.com, 手机 13812345678, 身份证 11010519491231002X, card 4111 1111 1111 1111"
LOGGED = serve.ServeSettings(max_prompt_tokens=160, max_new_tokens=8, max_prompt_chars=400,
                             max_body_bytes=4000, timeout_s=20.0, max_concurrency=4, model_name="tiny")


def logged_model():
    return GPT(GPTConfig(vocab_size=64, block_size=168, n_layer=1, n_head=2, n_embd=16)).eval()


def pii_requests(c):
    """Every generation route, streamed and not, with PII in the prompt, then one prompt too long
    (400). Returns [(route, the prompt as the model saw it, the text the client received)]."""
    msgs = [{"role": "system", "content": "cc zhang.san@example.com"}, {"role": "user", "content": PII_PROMPT}]
    chat = serve.chat_prompt([SimpleNamespace(**m) for m in msgs])
    got = [("/v1/generate", PII_PROMPT, post(c, {"prompt": PII_PROMPT, "max_new_tokens": 5}).json()["text"])]
    r = c.post("/v1/completions", json={"prompt": PII_PROMPT, "max_tokens": 6, "temperature": 0}).json()
    got.append(("/v1/completions", PII_PROMPT, r["choices"][0]["text"]))
    events = sse(c.post("/v1/completions", json={"prompt": PII_PROMPT, "max_tokens": 6, "temperature": 0,
                                                  "stream": True}).text)
    got.append(("/v1/completions", PII_PROMPT, "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])))
    r = c.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 4, "temperature": 0}).json()
    got.append(("/v1/chat/completions", chat, r["choices"][0]["message"]["content"]))
    events = sse(c.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 4, "temperature": 0,
                                                       "stream": True}).text)
    got.append(("/v1/chat/completions", chat, "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                                                      for e in events[:-1])))
    r = c.post("/v1/completions", json={"prompt": PII_PROMPT + " 13912345678" * 8})     # 180 tokens > 160
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    return got


def test_the_request_log_holds_masked_prompts_and_replies_only(tmp_path):
    path = tmp_path / "requests.jsonl"
    with TestClient(serve.create_app(logged_model(), CharTokenizer(), LOGGED, serve.RequestLog(path))) as c:
        got = pii_requests(c)
        assert c.get("/healthz").status_code == 200 and c.post("/v1/generate", json={}).status_code == 422
    text = path.read_text(encoding="utf-8")
    for secret in list(PII) + ["4111111111111111", "zhang.san", "12345678", "19491231"]:
        assert secret not in text
    records = [json.loads(line) for line in text.splitlines()]
    # one line per generation request that got past validation: not /healthz, not the 422
    assert [(r["route"], r["status"]) for r in records] == [(route, 200) for route, _, _ in got] + [
        ("/v1/completions", 400)]
    for r, (route, prompt, reply) in zip(records, got):
        assert all(mark in r["prompt"] for mark in PII.values()) and r["prompt"] == serve.mask_pii(prompt)
        assert r["prompt_tokens"] == len(prompt)                     # CharTokenizer: a token a character
        assert r["completion"] == serve.mask_pii(reply) and r["completion_tokens"] >= len(reply) > 0
        assert r["seconds"] > 0 and r["time"].endswith("+00:00")
    assert records[-1]["prompt"].count("[PHONE]") == 9 and records[-1]["completion_tokens"] == 0
    assert path.stat().st_mode & 0o777 == 0o600                 # masked prompts are still users' words


def test_no_request_log_without_the_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with TestClient(serve.create_app(logged_model(), CharTokenizer(), LOGGED)) as c:
        pii_requests(c)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_request_log_is_refused_at_start(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        serve.main(["--request-log", str(tmp_path / "no" / "such" / "dir" / "log.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "--request-log" in err and "cannot write it (No such file or directory)" in err


# ------------------------------------------------------------------ over real HTTP

@pytest.mark.slow
def test_the_openai_client_works_against_the_server(chat_model):
    import openai
    s = serve.ServeSettings(**{**AI.__dict__, "api_key": "k3y"})
    with serve.BackgroundServer(serve.create_app(chat_model, CharTokenizer(), s)) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="k3y", max_retries=0, timeout=30)
        assert [m.id for m in client.models.list()] == ["tiny"]
        done = client.completions.create(model="tiny", prompt="hello", max_tokens=8, temperature=0)
        text = done.choices[0].text
        assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 8
        streamed = client.completions.create(model="tiny", prompt="hello", max_tokens=8, temperature=0,
                                             stream=True)
        assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == text
        stop = client.completions.create(model="tiny", prompt="hello", max_tokens=8, temperature=0,
                                         stop=text[3])
        assert stop.choices[0].text == text[:text.index(text[3])]
        assert stop.choices[0].finish_reason == "stop"
        msgs = [{"role": "user", "content": "hi"}]
        chat = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=5, temperature=0)
        reply = chat.choices[0].message.content
        assert chat.choices[0].message.role == "assistant" and chat.usage.prompt_tokens == len("user: hi\nassistant:")
        pieces = [ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
            model="tiny", messages=msgs, max_tokens=5, temperature=0, stream=True)]
        assert "".join(pieces) == reply
        seeded = [client.chat.completions.create(model="tiny", messages=msgs, max_tokens=5, seed=3,
                                                 temperature=1.0).choices[0].message.content for _ in range(2)]
        assert seeded[0] == seeded[1]
        with pytest.raises(openai.BadRequestError, match="temperature"):
            client.completions.create(model="tiny", prompt="a", temperature=5)
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.completions.create(model="gpt-4", prompt="a")
        with pytest.raises(openai.AuthenticationError, match="API key"):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0).models.list()


@pytest.mark.slow
def test_a_chunked_body_is_capped_while_it_is_read(tiny_model):
    app = serve.create_app(tiny_model, CharTokenizer(), SETTINGS)   # max_body_bytes=2000
    sent = {"bytes": 0}

    def body():   # no Content-Length: httpx sends Transfer-Encoding: chunked
        yield b'{"prompt": "'
        for _ in range(10_000):
            sent["bytes"] += 1000
            yield b"x" * 1000
        yield b'"}'
    with serve.BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        try:
            r = c.post("/v1/generate", content=body(), headers={"content-type": "application/json"})
            assert r.status_code == 413 and "2000 bytes" in r.json()["detail"]
        except httpx.TransportError:
            pass   # the server may close while the client is still sending: also refused
        assert sent["bytes"] < 10_000_000                # it did not read the 10 MB to the end
        assert c.get("/healthz").status_code == 200
    assert serve.metric_value(app, "gptbook_http_errors_total", {"code": "413"}) == 1


@pytest.mark.slow
def test_slow_clients_are_cut_off(tiny_model):
    s = serve.ServeSettings(**{**SETTINGS.__dict__, "read_timeout_s": 0.5})
    app = serve.create_app(tiny_model, CharTokenizer(), s)
    with serve.BackgroundServer(app) as srv:
        host, port = srv.url.rsplit("//", 1)[1].split(":")
        # a body that stops arriving: 408 after read_timeout_s
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"prompt\"")
            t0 = time.monotonic()
            assert sock.recv(1000).startswith(b"HTTP/1.1 408")
            assert time.monotonic() - t0 < 5
        # headers that never end: the connection is closed after read_timeout_s
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            sock.sendall(b"X-Slow: 1\r\n")
            assert sock.recv(1000) == b"" and time.monotonic() - t0 < 5
        assert httpx.get(srv.url + "/healthz").status_code == 200
    assert serve.metric_value(app, "gptbook_http_errors_total", {"code": "408"}) == 1


# ------------------------------------------------------------------ fuzzing

@pytest.mark.slow
def test_fuzzed_bodies_and_headers_never_get_a_5xx(chat_model):
    """Generated JSON bodies and headers against the three generation routes: a 4xx or a 200, never a
    5xx, and the server still answers /healthz. Each field is a valid value or anything at all (NaN,
    huge numbers, lone surrogates, nested lists...), so both generation and refusals are reached.
    Bounded: 300 examples, derandomized, about 10 s."""
    import hypothesis as hyp
    st = hyp.strategies
    numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2**70, 2**70)
               | st.sampled_from([0, 1, -1, 1e-40, 5e-324, 1e-300, 1e308, 2.0, 0.5]))
    text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)   # surrogates too
    anything = st.recursive(st.none() | st.booleans() | numbers | text,
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                            max_leaves=8)
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]) | anything,
                                     "content": st.sampled_from(["hi", "to be"]) | anything})
    good = {"prompt": st.sampled_from(["hi", "to be", "?"]), "messages": st.lists(message, min_size=1, max_size=3),
            "max_new_tokens": st.integers(1, 4), "max_tokens": st.integers(1, 4),
            "temperature": st.floats(0, 2) | st.sampled_from([1e-40, 5e-324]), "top_k": st.integers(1, 64),
            "top_p": st.floats(1e-9, 1), "repetition_penalty": st.floats(1e-300, 10) | st.just(1e-300),
            "seed": st.integers(0, 2**63 - 1),
            "stop": st.sampled_from(["a", ["b", "c"], "\n"]), "stream": st.booleans(), "model": st.just("tiny"),
            "n": st.just(1), "extra": st.just(None)}   # "extra" is never a known field
    sampling = ["temperature", "top_k", "top_p", "repetition_penalty", "seed"]
    fields = {"/v1/generate": ["prompt", "max_new_tokens"] + sampling,
              "/v1/completions": ["prompt", "max_tokens", "stop", "stream", "model"] + sampling,
              "/v1/chat/completions": ["messages", "max_tokens", "stop", "stream", "model"] + sampling}

    def maybe(field):   # a valid value 3 times in 4, so that whole bodies are often valid
        return st.integers(0, 3).flatmap(lambda i: good[field] if i else anything)

    def request(path):
        first, *rest = fields[path]
        return st.tuples(st.just(path), st.fixed_dictionaries(
            {first: maybe(first)}, optional={k: maybe(k) for k in rest + ["n", "extra"]}))
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                          max_size=40).map(lambda t: t.encode("latin-1"))
    headers = st.just({}) | st.fixed_dictionaries({}, optional={
        "content-type": st.sampled_from([b"text/plain", b"application/x-json+json",
                                         b"application/x-www-form-urlencoded"]) | header_text,
        "x-api-key": header_text, "authorization": header_text})
    s = serve.ServeSettings(**{**AI.__dict__, "api_key": "k", "max_new_tokens": 4})
    app = serve.create_app(chat_model, CharTokenizer(), s)
    seen = Counter()

    with TestClient(app) as c:
        @hyp.settings(max_examples=300, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(hyp.HealthCheck))
        @hyp.given(req=st.one_of([request(p) for p in fields]), headers=headers)
        def check(req, headers):
            path, body = req
            content = json.dumps(body, allow_nan=True).encode()     # NaN, Infinity and \ud800 escapes
            r = c.post(path, content=content, headers={"content-type": b"application/json", "x-api-key": b"k",
                                                       **headers})
            seen[r.status_code] += 1
            assert r.status_code < 500, (path, content[:300], r.status_code, r.text[:300])
            assert "server_error" not in r.text, (path, content[:300], r.text[-300:])   # inside a stream
        check()
        assert c.get("/healthz").status_code == 200
    assert seen[200] > 10 and len(seen) >= 4, seen      # the fuzz reached generation and several refusals
    codes = {smp.labels["code"] for fam in app.state.registry.collect() if fam.name == "gptbook_http_errors"
             for smp in fam.samples if "code" in smp.labels}
    assert not any(code.startswith("5") for code in codes), codes


# ------------------------------------------------------------------ the same service on every backend

@pytest.fixture(scope="module", params=[
    "torch", pytest.param("onnx", marks=pytest.mark.slow), pytest.param("onnx-int8", marks=pytest.mark.slow)])
def backend_model(request, tmp_path_factory):
    """(the model a backend serves, the PyTorch model it came from: tiny_model's weights)."""
    from gptbook.deploy import onnx
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    return onnx.backend(model, request.param, tmp_path_factory.mktemp(request.param)), model


def test_every_backend_answers_with_its_own_generate(backend_model):
    served, torch_model = backend_model
    tok = CharTokenizer()
    app = serve.create_app(served, tok, SETTINGS)
    with TestClient(app) as c:
        r = post(c, {"prompt": "hi there", "max_new_tokens": 5})
        assert r.status_code == 200, r.text
        ids = torch.tensor([tok.encode("hi there").ids])
        ref = generate(served, ids, 5, temperature=0.0, eos_token_id=0)[0, 8:].tolist()
        n = r.json()["completion_tokens"]
        assert r.json()["text"] == tok.decode(ref[:n])
        if getattr(served, "name", "torch") in ("torch", "onnx"):   # fp32: PyTorch's very tokens
            assert ref == generate(torch_model, ids, 5, temperature=0.0, eos_token_id=0)[0, 8:].tolist()
        health = c.get("/healthz").json()
        assert health["backend"] == getattr(served, "name", "torch")
        assert health["parameters"] == torch_model.num_params()
        # the same validation and limits, whatever runs the model
        assert post(c, {"prompt": "123456789"}).status_code == 413
        assert post(c, {"prompt": "a", "max_new_tokens": 9}).status_code == 422
        assert post(c, {"prompt": "a", "temperature": -1}).status_code == 422
        r = c.post("/v1/completions", json={"prompt": "abc", "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        body = {"prompt": "abc", "max_new_tokens": 8, "temperature": 1.0, "top_k": 10, "seed": 7}
        assert post(c, body).json()["text"] == post(c, body).json()["text"]
        # and the same metrics
        ok = serve.metric_value(app, "gptbook_http_requests_total", {"route": "/v1/generate", "code": "200"})
        assert ok == 3 and serve.metric_value(app, "gptbook_http_errors_total", {"code": "422"}) == 2
        assert serve.metric_value(app, "gptbook_in_flight") == 0


def test_every_backend_times_out_with_504(backend_model):
    served, _ = backend_model
    s = serve.ServeSettings(**{**SETTINGS.__dict__, "timeout_s": 0.3, "max_concurrency": 1})
    handle = served.register_forward_pre_hook(lambda m, a: time.sleep(0.1))
    try:
        app = serve.create_app(served, CharTokenizer(), s)
        with TestClient(app) as c:
            r = post(c, {"prompt": "a", "max_new_tokens": 8})
            assert r.status_code == 504 and "longer than 0.3 s" in r.json()["detail"]
            time.sleep(0.3)   # the worker stops at its next forward pass and frees the only slot
            assert post(c, {"prompt": "a", "max_new_tokens": 1}).status_code == 200
            assert serve.metric_value(app, "gptbook_http_errors_total", {"code": "504"}) == 1
    finally:
        handle.remove()
    assert len(served._forward_pre_hooks) == 0     # the deadline check is gone too


def test_the_cli_names_the_backends(capsys):
    with pytest.raises(SystemExit) as e:
        serve.main(["--backend", "tensorrt"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'tensorrt'" in err and "onnx-int8" in err


# ------------------------------------------------------------------ several worker processes

@pytest.mark.slow
def test_workers_share_one_port_and_metrics_sum_over_them(tmp_path):
    """`serve --workers 2` (the shipped model, nothing to train): two processes answer on one port;
    /metrics, answered by either, counts every request (prometheus_client's multiprocess mode)."""
    import os
    import subprocess
    import sys

    import psutil
    from prometheus_client.parser import text_string_to_metric_families
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gptbook", "serve", "--port", str(port), "--workers", "2",
                             "--weights", "book-broad", "--max-new-tokens", "4", "--request-log",
                             str(tmp_path / "requests.jsonl")],
                            env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def workers():
        return [p for p in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                health = httpx.get(base + "/healthz", timeout=1.0)
                if len(workers()) == 2:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.3)
        assert health.json()["parameters"] > 0
        assert len(workers()) == 2          # uvicorn's supervisor has 2 worker processes (and a resource tracker)

        def ask(i):
            with httpx.Client(timeout=60) as c:          # a new connection each: either worker may take it
                return c.post(base + "/v1/completions", json={"prompt": f"ROMEO {i}:", "max_tokens": 4}).status_code
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(ask, range(12)))
        assert codes == [200] * 12
        counts = {}
        for _ in range(4):                               # whichever worker answers /metrics, the same sum
            for family in text_string_to_metric_families(httpx.get(base + "/metrics").text):
                for smp in family.samples:
                    if smp.name == "gptbook_http_requests_total" and smp.labels.get("route") == "/v1/completions":
                        counts.setdefault(smp.labels["code"], set()).add(smp.value)
        assert counts == {"200": {12.0}}
        lines = (tmp_path / "requests.jsonl").read_text().splitlines()
        assert len(lines) == 12 and all(json.loads(x)["status"] == 200 for x in lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_the_workers_option_is_checked(capsys):
    with pytest.raises(SystemExit) as e:
        serve.main(["--workers", "0"])
    assert e.value.code == 2 and "--workers must be in 1..64" in capsys.readouterr().err
