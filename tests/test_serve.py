"""The HTTP service, exercised with real clients: TestClient in-process, httpx against uvicorn."""
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from gptbook.deploy import serve
from gptbook.generate import generate


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


def test_only_loopback():
    with pytest.raises(ValueError, match="loopback"):
        serve.BackgroundServer(object(), host="0.0.0.0")
    with pytest.raises(SystemExit):
        serve.main(["--host", "0.0.0.0"])
