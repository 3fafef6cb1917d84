"""The web page's API (FastAPI TestClient on tiny saved models), the serve CLI, and a bounded load test."""
from __future__ import annotations

import json
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from unmask.server.app import Limits, create_app  # noqa: E402

STATIC = Path(__file__).resolve().parents[1] / "src" / "unmask" / "server" / "static"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # gitignored


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from unmask.models.tiny import tiny_classifier

    root = tmp_path_factory.mktemp("served")
    a = tiny_classifier(seed=0, num_labels=2)
    a.model.config.id2label = {0: "negative", 1: "positive"}
    a.model.config.label2id = {"negative": 0, "positive": 1}
    return a.save(root / "f_orig"), tiny_classifier(seed=3).save(root / "other")


@pytest.fixture(scope="module")
def models(model_dirs):
    from unmask.models import load_model

    return {"f_orig": load_model(model_dirs[0]), "other": load_model(model_dirs[1])}


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models, Limits(max_chars=200, max_tokens=40, max_methods=3))) as c:
        yield c


def test_info_lists_models_labels_methods_and_limits(client):
    from unmask.attribution import METHODS

    info = client.get("/api/info").json()
    assert [m["name"] for m in info["models"]] == ["f_orig", "other"]
    assert info["models"][0]["labels"] == ["negative", "positive"]
    assert info["methods"] == sorted({c.name for c in METHODS.values()})
    assert info["limits"]["max_tokens"] == 40 and info["pairs"] is False


def test_explain_matches_the_library(client, models):
    from unmask.attribution import explain

    text = "a gripping , funny film ."
    r = client.post("/api/explain", json={"text": text, "methods": ["gradient_x_input", "leave_one_out"]})
    assert r.status_code == 200, r.text
    data = r.json()
    assert [m["name"] for m in data["models"]] == ["f_orig", "other"]
    for served in data["models"]:
        model = models[served["name"]]
        probs = model.predict([text])[0].numpy()
        np.testing.assert_allclose(served["probabilities"], probs, atol=1e-6)
        assert served["prediction"] == int(probs.argmax())
        assert served["prediction_name"] == model.label_names[int(probs.argmax())]
        lib = explain(model, [text], methods=["gradient_x_input", "leave_one_out"])
        for method, recs in lib.items():
            view = served["methods"][method]
            assert view["tokens"] == recs[0].tokens
            np.testing.assert_allclose(view["scores"], recs[0].scores, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(view["normalized"], recs[0].normalized(), rtol=1e-6, atol=1e-9)
            assert view["special"] == [s is None for s in recs[0].sequence_ids]
    assert data["models"][0]["prediction_name"] in ("negative", "positive")


def test_markup_in_the_input_comes_back_verbatim(client):
    text = "<script>alert(1)</script> fine"
    data = client.post("/api/explain", json={"text": text, "methods": ["gradient"]}).json()
    assert data["text"] == text
    assert "script" in data["models"][0]["methods"]["gradient"]["tokens"]


@pytest.mark.parametrize("body, status, message", [
    ({"text": "   "}, 400, "the text is empty"),
    ({"text": "x" * 201}, 400, "201 characters, over the limit of 200"),
    ({"text": " ".join(["a"] * 60)}, 400, "62 word pieces for model f_orig, over the limit of 40"),
    ({"text": "fine", "methods": ["nope"]}, 400, "unknown method 'nope'"),
    ({"text": "fine", "methods": []}, 400, "pick at least one method"),
    ({"text": "fine", "methods": ["gradient", "smoothgrad", "attention", "leave_one_out"]}, 400,
     "4 methods requested, over the limit of 3"),
    ({"text": 5}, 400, "the text must be a string"),
    ({"text": "fine", "methods": "gradient"}, 400, "methods must be a list"),
    ({"text": "fine", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
])
def test_bad_input_gets_one_clear_message_and_the_server_stays_up(client, body, status, message):
    r = client.post("/api/explain", json=body)
    assert r.status_code == status and message in r.json()["error"], r.text
    assert client.post("/api/explain", json={"text": "fine", "methods": ["gradient"]}).status_code == 200


def test_oversized_body_is_refused_before_parsing_and_the_server_stays_up(client):
    limit = Limits(max_chars=200).max_body
    body = b'{"text": "' + b"x" * limit + b'"}'
    r = client.post("/api/explain", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and f"{len(body)} bytes, over the limit of {limit}" in r.json()["error"]
    worst = {"text": "\x01" * 200, "pair": "\x01" * 200, "methods": ["gradient"]}  # 6 bytes a character
    r = client.post("/api/explain", json=worst)
    assert r.status_code != 413, r.text  # the byte bound never refuses what the character bound allows
    assert client.post("/api/explain", json={"text": "fine", "methods": ["gradient"]}).status_code == 200


def test_body_that_is_not_json(client):
    r = client.post("/api/explain", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]


def test_timeout_answers_504_and_later_requests_work(models):
    app = create_app(models, Limits(timeout=1.0))
    service = app.state.service
    real = service.explain
    release, finished = threading.Event(), threading.Event()

    def stuck(*args):
        service.explain = real
        release.wait(10)
        finished.set()
        return real(*args)

    service.explain = stuck
    with TestClient(app) as c:
        r = c.post("/api/explain", json={"text": "fine", "methods": ["gradient"]})
        assert r.status_code == 504 and "longer than the limit of 1 s" in r.json()["error"]
        release.set()
        assert finished.wait(10)  # the abandoned call ends in the worker
        assert c.post("/api/explain", json={"text": "fine", "methods": ["gradient"]}).status_code == 200


def test_internal_error_is_json_and_the_server_stays_up(models):
    app = create_app(models)
    service = app.state.service
    real = service.explain

    def broken(*args):
        service.explain = real
        raise RuntimeError("boom")

    service.explain = broken
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/api/explain", json={"text": "fine"})
        assert r.status_code == 500 and "RuntimeError" in r.json()["error"] and "boom" in r.json()["error"]
        assert c.post("/api/explain", json={"text": "fine"}).status_code == 200


def test_pair_model_needs_a_hypothesis_and_uses_both_segments(models):
    with TestClient(create_app({"rte": models["other"]}, task="rte")) as c:
        assert c.get("/api/info").json()["pairs"] is True
        r = c.post("/api/explain", json={"text": "A man sleeps."})
        assert r.status_code == 400 and "type a hypothesis" in r.json()["error"]
        data = c.post("/api/explain", json={"text": "A man sleeps.", "pair": "A person rests.",
                                            "methods": ["gradient"]}).json()
        view = data["models"][0]["methods"]["gradient"]
        assert data["pair"] == "A person rests." and set(view["segments"]) == {None, 0, 1}


def test_perturbations_match_the_library(client, models):
    from unmask.perturbation import hotflip, reduce_inputs

    text = "a gripping , funny film ."
    red = client.post("/api/perturb", json={"text": text, "kind": "reduce"}).json()
    flip = client.post("/api/perturb", json={"text": text, "kind": "hotflip"}).json()
    for i, name in enumerate(models):
        (r,) = reduce_inputs(models[name], [text])
        (h,) = hotflip(models[name], [text], max_flips=Limits().max_flips)
        assert red["models"][i]["result"]["final_tokens"] == r.final_tokens
        assert red["models"][i]["final_text"] == models[name].tokenizer.convert_tokens_to_string(r.segment_tokens())
        assert flip["models"][i]["result"]["final_tokens"] == h.final_tokens
        assert flip["models"][i]["result"]["success"] == h.success
    r = client.post("/api/perturb", json={"text": text, "kind": "shuffle"})
    assert r.status_code == 400 and "unknown analysis 'shuffle'" in r.json()["error"]


def test_page_and_assets_are_served_and_build_the_dom_without_innerhtml(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/app.js"' in page.text and 'id="legend"' in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "textContent" in js.text
    assert "innerHTML" not in js.text and "insertAdjacentHTML" not in js.text and "outerHTML" not in js.text
    assert client.get("/static/style.css").status_code == 200


def test_audit_endpoint_calls_the_audit_once_per_model_on_the_builtin_sample(models, monkeypatch):
    import importlib

    from unmask.data import load_task

    audit_module = importlib.import_module("unmask.audit")  # `unmask.audit` may name the function itself

    calls = []

    class Report:
        def __init__(self, name):
            self.name = name

        def to_dict(self):
            return {"verdict": f"trustworthy ({self.name})", "summary": "fine", "methods": {"gradient": {"p": 0.5}}}

    def fake(model, texts, pairs=None, progress=None, **kwargs):
        calls.append((model.name, list(texts), pairs))
        return Report(model.name)

    monkeypatch.setattr(audit_module, "audit", fake)
    with TestClient(create_app(models, Limits(audit_examples=4))) as c:
        assert c.get("/api/info").json()["audit"] is True
        first = c.post("/api/audit").json()
        again = c.post("/api/audit").json()
    expected = [e.text for e in load_task("sst2", "dev", limit=4)]
    assert calls == [(models["f_orig"].name, expected, None), (models["other"].name, expected, None)]
    assert [m["report"]["verdict"] for m in first["models"]] == [
        f"trustworthy ({models['f_orig'].name})", f"trustworthy ({models['other'].name})"]
    assert again["models"] == first["models"] and "first 4 SST-2 dev inputs" in first["sample"]


def test_audit_endpoint_answers_what_the_audit_answers(models):
    """The real ``unmask.audit.audit``: the endpoint's verdict (or its one error message) equals a direct call."""
    from unmask.audit import audit
    from unmask.data import load_task
    from unmask.errors import UnmaskError

    texts = [e.text for e in load_task("sst2", "dev", limit=4)]
    try:
        direct = {"report": audit(models["f_orig"], texts).to_dict()}
    except UnmaskError as e:
        direct = {"error": str(e)}
    with TestClient(create_app({"f_orig": models["f_orig"]}, Limits(audit_examples=4))) as c:
        r = c.post("/api/audit")
    if "error" in direct:
        assert r.status_code == 400 and r.json()["error"] == direct["error"]
    else:
        served = r.json()["models"][0]["report"]
        assert {"verdict", "summary", "methods"} <= set(served)
        assert served["verdict"] == direct["report"]["verdict"]
        assert served["summary"] == direct["report"]["summary"]


# ---------------------------------------------------------------------------------------- CLI
def test_serve_cli_rejects_bad_arguments(model_dirs, capsys):
    from unmask.cli import main

    assert main(["serve", "--model", str(model_dirs[0]), "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err
    assert main(["serve", "--model", str(model_dirs[0]), "--json", "out.json"]) == 2
    assert "--json takes '-'" in capsys.readouterr().err
    assert main(["serve", "--model", str(model_dirs[0]), "--max-tokens", "0"]) == 2
    assert "--max-tokens must be >= 1" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(model_dirs[0]), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", "--model", "/no/such/model", "--port", "0"]) == 2
    assert "model path not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- load
def test_load_200_requests_4_at_a_time(models, record_property):
    """A real uvicorn server on 127.0.0.1: 200 explain requests, 4 in flight, no errors; states the latency
    percentiles (printed, in the JUnit properties, and in tests/artifacts/load_test.json)."""
    import uvicorn

    app = create_app({"f_orig": models["f_orig"]})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}/api/explain"
        texts = [f"a {w} film about {n} people ." for n in range(10) for w in ("fine", "dull", "moving", "bad")]

        local, clients = threading.local(), []

        def one(i: int) -> tuple[int, float]:
            if not hasattr(local, "client"):  # one keep-alive connection per worker
                local.client = httpx.Client(timeout=30)
                clients.append(local.client)
            t = time.perf_counter()
            r = local.client.post(url, json={"text": texts[i % len(texts)], "methods": ["gradient_x_input"]})
            return r.status_code, time.perf_counter() - t

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(one, range(200)))
        wall = time.perf_counter() - start
        for h in clients:
            h.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    statuses = [s for s, _ in results]
    latencies = sorted(t for _, t in results)
    assert statuses == [200] * 200, f"errors: {[s for s in statuses if s != 200][:5]}"
    ms = {f"p{q}": round(1000 * _percentile(latencies, q), 1) for q in (50, 90, 95, 99)}
    ms["max"] = round(1000 * latencies[-1], 1)
    stated = {"requests": 200, "concurrency": 4, "errors": 0, "wall_s": round(wall, 2),
              "requests_per_s": round(200 / wall, 1), "latency_ms": ms}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load_test.json").write_text(json.dumps(stated, indent=2) + "\n")
    print(f"\nload: 200 requests, 4 concurrent, {wall:.2f} s wall, {200 / wall:.1f} req/s, "
          + ", ".join(f"{k} {v} ms" for k, v in ms.items()))
    record_property("load_latency_ms", ms)
    assert ms["p50"] <= ms["p90"] <= ms["p95"] <= ms["p99"] <= ms["max"]
    assert not thread.is_alive()


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 201)]
    assert [_percentile(values, q) for q in (50, 95, 99, 100)] == [100.0, 190.0, 198.0, 200.0]
    assert _percentile([3.0], 50) == 3.0


def test_cli_works_without_the_web_extra():
    """Without fastapi / uvicorn / pydantic the other commands still parse, and serve says what to install."""
    import subprocess
    import sys

    code = ("import sys\nfor m in ('fastapi', 'uvicorn', 'pydantic', 'starlette'): sys.modules[m] = None\n"
            "from unmask.cli import build_parser, main\nbuild_parser()\n"
            "sys.exit(main(['serve', '--model', 'x']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "needs the web extra: pip install 'unmask[web]'" in r.stderr


def test_non_finite_numbers_become_null():
    from unmask.server.app import _jsonable

    out = _jsonable({"a": float("nan"), "b": [np.float32(1.5), np.inf], "c": np.array([1, 2]), 3: (None, "x")})
    assert out == {"a": None, "b": [1.5, None], "c": [1, 2], "3": [None, "x"]}
    json.dumps(out, allow_nan=False)
