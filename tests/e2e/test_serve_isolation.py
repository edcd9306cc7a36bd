"""Per-key job isolation: with API keys, a job is visible only to the key that created it.
Another key gets exactly the 404 of an id that never existed (so ids cannot be probed) on every
job route; the owner is stored as a hash, never as the key; image links are capabilities."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from conftest_serve import LONG, STEPS, live_server

ALICE, BOB = "sk-alice-0123456789", "sk-bob-9876543210"
A = {"Authorization": f"Bearer {ALICE}"}
B = {"Authorization": f"Bearer {BOB}"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from blinkgen.serve.limits import load_api_keys

    keyfile = tmp_path_factory.mktemp("keys") / "keys"
    keyfile.write_text(f"# two tenants\n{ALICE}\n{BOB}\n")
    with live_server(api_keys=load_api_keys(keyfile, env={})) as live:
        yield live


def as_unknown(r, job_id: str) -> dict:
    """The error body with the id masked: must equal the body for an id that never existed."""
    assert r.status_code == 404, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return json.loads(json.dumps(body).replace(job_id, "<id>"))


def events(srv, job_id: str, headers) -> list[tuple[str, dict]]:
    out, name = [], None
    with srv.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                out.append((name, json.loads(line[5:])))
    return out


def test_other_key_sees_a_finished_job_as_unknown(srv):
    r = srv.client.post("/v1/jobs", json={"prompt": "alice's", "steps": STEPS, "response_format": "url"},
                        headers=A)
    assert r.status_code == 202, r.text
    jid = r.json()["id"]
    done = srv.wait_job(jid, headers=A)
    assert done["state"] == "done" and done["data"][0]["url"]
    fake = "job_" + "0" * 24
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/events")):
        unknown = as_unknown(srv.client.request(method, f"/v1/jobs/{fake}{suffix}", headers=A), fake)
        assert unknown["error"]["code"] == "job_not_found"
        theirs = as_unknown(srv.client.request(method, f"/v1/jobs/{jid}{suffix}", headers=B), jid)
        assert theirs == unknown, (method, suffix)
    # the owner still has it, unchanged by the other key's attempts
    assert srv.client.get(f"/v1/jobs/{jid}", headers=A).json()["state"] == "done"
    evs = events(srv, jid, A)
    assert evs[-1][0] == "done" and evs[-1][1]["data"][0]["url"]
    assert srv.client.delete(f"/v1/jobs/{jid}", headers=A).status_code == 409  # owner: finished


def test_other_key_cannot_cancel_or_stream_a_running_job(srv):
    jid = srv.client.post("/v1/jobs", json={"prompt": "alice's long one", **LONG}, headers=A).json()["id"]
    srv.wait_job(jid, states=("running",), headers=A)
    assert srv.client.delete(f"/v1/jobs/{jid}", headers=B).status_code == 404
    assert srv.client.get(f"/v1/jobs/{jid}/events", headers=B).status_code == 404
    assert srv.client.get(f"/v1/jobs/{jid}", headers=A).json()["state"] == "running"
    r = srv.client.delete(f"/v1/jobs/{jid}", headers=A)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"


def test_each_key_sees_its_own_jobs(srv):
    ja = srv.client.post("/v1/jobs", json={"prompt": "a", "steps": STEPS}, headers=A).json()["id"]
    jb = srv.client.post("/v1/jobs", json={"prompt": "b", "steps": STEPS}, headers=B).json()["id"]
    assert srv.wait_job(ja, headers=A)["prompt"] == "a"
    assert srv.wait_job(jb, headers=B)["prompt"] == "b"
    assert srv.client.get(f"/v1/jobs/{ja}", headers=B).status_code == 404
    assert srv.client.get(f"/v1/jobs/{jb}", headers=A).status_code == 404
    # a missing or wrong key is still a 401 (authentication), not a 404
    assert srv.client.get(f"/v1/jobs/{ja}").status_code == 401
    assert srv.client.get(f"/v1/jobs/{ja}", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_owner_is_a_hash_never_the_key(srv):
    jid = srv.client.post("/v1/jobs", json={"prompt": "hash me", "steps": STEPS}, headers=A).json()["id"]
    srv.wait_job(jid, headers=A)
    job = srv.service.store.get(jid)
    assert job.owner == hashlib.sha256(ALICE.encode()).hexdigest()
    fields = repr({f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.name != "results"})
    assert ALICE not in fields


def test_image_links_are_unguessable_capabilities(srv):
    """url links work without a key (as <img src> and OpenAI's links do) because the token is
    192 random bits that only the owner's response reveals."""
    r = srv.client.post("/v1/images/generations", json={"prompt": "link", "steps": STEPS,
                                                        "response_format": "url"}, headers=A)
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    token = url.rsplit("/", 1)[1].removesuffix(".png")
    assert len(token) >= 32  # token_urlsafe(24): 32 characters, 192 bits
    assert srv.client.get(url).status_code == 200
    assert srv.client.get(url.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))).status_code == 404


def test_without_keys_every_caller_sees_every_job():
    with live_server() as live:
        jid = live.client.post("/v1/jobs", json={"prompt": "open", "steps": STEPS}).json()["id"]
        assert live.wait_job(jid)["state"] == "done"
        assert live.service.store.get(jid).owner is None
        # a stray Authorization header changes nothing on a server without keys
        assert live.client.get(f"/v1/jobs/{jid}", headers=B).status_code == 200
