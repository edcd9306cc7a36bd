"""Bad input is a 4xx in OpenAI's error shape, never a 5xx (table-driven); plus API keys, the
bounded queue (429 + Retry-After), per-request timeouts and body-size caps."""
from __future__ import annotations

import socket
import time

import pytest

from blinkgen.serve.schemas import Limits
from conftest_serve import LONG, STEPS, live_server

LONG_PROMPT = "x" * 1001
DEEP = "[" * 30_000 + "]" * 30_000  # under the body cap, deeper than Python's recursion limit

# (id, raw body or JSON-able object, expected status or None for "any 4xx", expected param or None)
BAD = [
    ("not-json", b"{", 400, None),
    ("empty-body", b"", 400, None),
    ("json-array", [], 400, None),
    ("json-string", "hi", 400, None),
    ("json-null", None, 400, None),
    ("missing-prompt", {}, 400, "prompt"),
    ("prompt-int", {"prompt": 3}, 400, "prompt"),
    ("prompt-object", {"prompt": {"a": 1}}, 400, "prompt"),
    ("prompt-empty", {"prompt": ""}, 400, "prompt"),
    ("prompt-blank", {"prompt": "   "}, 400, "prompt"),
    ("prompt-too-long", {"prompt": LONG_PROMPT}, 400, "prompt"),
    ("prompt-nul", {"prompt": "a\x00b"}, 400, "prompt"),
    ("n-zero", {"prompt": "a", "n": 0}, 400, "n"),
    ("n-eleven", {"prompt": "a", "n": 11}, 400, "n"),
    ("n-string", {"prompt": "a", "n": "2"}, 400, "n"),
    ("n-float", {"prompt": "a", "n": 1.5}, 400, "n"),
    ("n-bool", {"prompt": "a", "n": True}, 400, "n"),
    ("size-unsupported", {"prompt": "a", "size": "1024x1024"}, 400, "size"),
    ("size-garbage", {"prompt": "a", "size": "big"}, 400, "size"),
    ("format-unknown", {"prompt": "a", "response_format": "png"}, 400, "response_format"),
    ("model-unknown", {"prompt": "a", "model": "nope"}, 400, "model"),
    ("model-relative-path", {"prompt": "a", "model": "../../etc/passwd"}, 400, "model"),
    ("model-absolute-path", {"prompt": "a", "model": "/tmp"}, 400, "model"),
    ("seed-negative", {"prompt": "a", "seed": -1}, 400, "seed"),
    ("seed-huge", {"prompt": "a", "seed": 2**70}, 400, "seed"),
    ("seed-string", {"prompt": "a", "seed": "abc"}, 400, "seed"),
    ("steps-zero", {"prompt": "a", "steps": 0}, 400, "steps"),
    ("steps-over-cap", {"prompt": "a", "steps": 9}, 400, "steps"),
    ("steps-float", {"prompt": "a", "steps": 1.5}, 400, "steps"),
    ("guidance-negative", {"prompt": "a", "guidance": -1}, 400, "guidance"),
    ("guidance-too-big", {"prompt": "a", "guidance": 1e9}, 400, "guidance"),
    ("guidance-nan", b'{"prompt": "a", "guidance": NaN}', 400, None),
    ("guidance-infinity", b'{"prompt": "a", "guidance": Infinity}', 400, None),
    ("guidance-string", {"prompt": "a", "guidance": "high"}, 400, "guidance"),
    ("sampler-unknown", {"prompt": "a", "sampler": "nope"}, 400, "sampler"),
    ("sampler-int", {"prompt": "a", "sampler": 3}, 400, "sampler"),
    ("unknown-field", {"prompt": "a", "stpes": 2}, 400, "stpes"),
    ("invalid-utf8", b'{"prompt": "\xff\xfe"}', 400, None),
    ("deep-nesting", DEEP.encode(), 400, None),
    ("body-too-large", b'{"prompt": "' + b"a" * 70_000 + b'"}', 413, None),
]


@pytest.fixture(scope="module")
def srv():
    with live_server(limits=Limits(max_steps=8), max_body_bytes=64 * 1024) as live:
        yield live


@pytest.mark.parametrize("endpoint", ["/v1/images/generations", "/v1/jobs"])
@pytest.mark.parametrize("name,body,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_4xx_in_openai_shape(srv, endpoint, name, body, status, param):
    if isinstance(body, bytes):
        r = srv.client.post(endpoint, content=body, headers={"content-type": "application/json"})
    else:
        r = srv.client.post(endpoint, json=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if status is not None:
        assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert isinstance(err["code"], str) and err["code"], err  # every error names its code
    if param is not None:
        assert err["param"] == param, err


@pytest.mark.parametrize("method,path,headers,status", [
    ("GET", "/v1/images/generations", {}, 405),
    ("PUT", "/v1/jobs", {}, 405),
    ("GET", "/v1/nothing-here", {}, 404),
    ("POST", "/v1/images/generations", {"content-type": "text/plain"}, 400),
])
def test_wrong_method_route_or_headers(srv, method, path, headers, status):
    r = srv.client.request(method, path, content=b'{"prompt": "a"}' if method == "POST" else None,
                           headers=headers)
    assert r.status_code == status, r.text[:300]
    assert r.json()["error"]["code"], r.text[:300]


def test_body_that_is_not_utf8_gets_a_code(srv):
    r = srv.client.post("/v1/images/generations", content=b'{"prompt": "\xff\xfe"}',
                        headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_json" and "UTF-8" in err["message"], err


def test_malformed_content_length_is_400(srv):
    """httpx refuses to send this, so speak HTTP/1.1 over a raw socket."""
    host, port = srv.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: abc\r\nConnection: close\r\n\r\n{}")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500, reply[:200]


def test_api_keys(monkeypatch, tmp_path):
    openai = pytest.importorskip("openai")
    keyfile = tmp_path / "keys"
    keyfile.write_text("# team keys\nsk-file-key\n")
    monkeypatch.setenv("BLINKGEN_API_KEYS", "sk-env-key, other")
    from blinkgen.serve.limits import load_api_keys

    keys = load_api_keys(keyfile)
    assert keys == {"sk-file-key", "sk-env-key", "other"}
    with live_server(api_keys=keys) as srv:
        for hdr in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sk-file-key"}):
            r = srv.client.get("/v1/models", headers=hdr)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            assert srv.client.post("/v1/jobs", json={"prompt": "a"}, headers=hdr).status_code == 401
        assert srv.client.get("/health").status_code == 200  # probes stay open
        assert srv.client.get("/v1/models", headers={"Authorization": "Bearer sk-env-key"}).status_code == 200
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="sk-file-key", max_retries=0)
        res = client.images.generate(model=srv.model, prompt="a key", n=1, extra_body={"steps": 1})
        assert res.data[0].b64_json
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base_url + "/v1", api_key="bad", max_retries=0).models.list()


def test_full_queue_is_429_with_retry_after():
    with live_server(max_queue=3, max_batch=1, batch_window_ms=0) as srv:
        ids, rejected = [], None
        for _ in range(20):
            r = srv.client.post("/v1/jobs", json={"prompt": "fill", "n": 2, "steps": 50})
            if r.status_code == 429:
                rejected = r
                break
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        assert rejected is not None, "queue never filled"
        assert int(rejected.headers["retry-after"]) >= 1
        assert rejected.json()["error"]["type"] == "rate_limit_error"
        # n larger than the whole queue can never fit: a plain 400, not "retry later"
        assert srv.client.post("/v1/jobs", json={"prompt": "x", "n": 4}).status_code == 400
        assert "blinkgen_queue_depth" in srv.client.get("/metrics").text
        for i in ids:
            srv.client.delete(f"/v1/jobs/{i}")


def test_request_timeout_is_504_and_job_fails():
    with live_server(timeout_s=0.4) as srv:
        r = srv.client.post("/v1/images/generations", json={"prompt": "slow", **LONG})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        job = srv.client.post("/v1/jobs", json={"prompt": "slow", **LONG}).json()
        final = srv.wait_job(job["id"])
        assert final["state"] == "failed" and final["error"]["code"] == "timeout"
        # the timed-out batch is aborted (not run to its 400th step): the worker goes idle
        deadline = time.monotonic() + 10
        while "blinkgen_images_running 0" not in srv.client.get("/metrics").text:
            assert time.monotonic() < deadline, "timed-out batch kept running"
            time.sleep(0.05)


def test_shutdown_finishes_in_flight_work_within_grace():
    with live_server(shutdown_grace_s=30) as srv:
        job = srv.client.post("/v1/jobs", json={"prompt": "finish me", "n": 2, "steps": STEPS}).json()
        srv.stop()
        assert not srv.thread.is_alive()
        state = srv.service.store.get(job["id"]).state
        assert state == "done"


def test_shutdown_fails_what_it_cannot_finish_explicitly():
    with live_server(shutdown_grace_s=0.2) as srv:
        job = srv.client.post("/v1/jobs", json={"prompt": "too long", **LONG}).json()
        srv.wait_job(job["id"], states=("running",))
        srv.stop()
        assert not srv.thread.is_alive()
        j = srv.service.store.get(job["id"])
        assert j.state == "failed" and j.error["code"] == "shutting_down"


@pytest.mark.parametrize("content,headers", [
    (b'{"prompt": "a"}', {"content-type": "text/plain"}),  # JSON sent with the wrong Content-Type
    (b'{"prompt": "a"}', {"content-type": "application/x-www-form-urlencoded"}),
    (b'["a"]', {"content-type": "application/json"}),  # JSON, but not an object
])
def test_a_body_that_is_not_a_json_object_says_what_is_wanted(srv, content, headers):
    r = srv.client.post("/v1/images/generations", content=content, headers=headers)
    assert r.status_code == 400, r.text[:300]
    msg = r.json()["error"]["message"]
    assert "JSON object" in msg and "Input should be" not in msg, msg  # ours, not pydantic's words
    if headers["content-type"] != "application/json":
        assert headers["content-type"] in msg and "application/json" in msg, msg
