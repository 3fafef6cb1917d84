"""The web page's server: FastAPI + one static page (plain JS, no build step).

``create_app(models)`` serves ``static/index.html`` and a small JSON API:

- ``GET  /api/info``: the loaded models (name, label names), the methods, the limits, whether pairs are used
- ``POST /api/explain``: ``{text, pair?, methods}`` -> prediction (label names, probabilities) and one heatmap
  per method and model
- ``POST /api/perturb``: ``{text, pair?, kind: "reduce" | "hotflip"}`` -> input reduction / HotFlip per model
- ``POST /api/audit``: the audit verdict for every loaded model on a small built-in sample (cached)

Every request is bounded (body bytes, characters, tokens, methods, seconds). Bad input answers
``{"error": "<message>"}`` with status 400 (413 for a body over ``Limits.max_body``, 422 for a malformed
body, 504 for a timeout); the server stays up.
"""
from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict

from unmask.errors import UnmaskError
from unmask.models.classifier import TextClassifier
from unmask.server.limits import Limits

DEFAULT_METHODS = ("gradient_x_input", "integrated_gradients")
PERTURBATIONS = ("reduce", "hotflip")
TASK_SAMPLES = {"sst2": "SST-2", "rte": "RTE"}


def guess_task(model: TextClassifier) -> str:
    """``"rte"`` for an entailment model (premise + hypothesis), else ``"sst2"`` (one sentence)."""
    return "rte" if any("entail" in n.lower() for n in model.label_names) else "sst2"


def _jsonable(value: Any) -> Any:
    """numpy scalars / arrays and tuples -> plain JSON values; NaN and infinities -> null (JSON has none)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


class Service:
    """The models and the work behind the endpoints, independent of HTTP (tested directly too)."""

    def __init__(self, models: dict[str, TextClassifier], limits: Limits = Limits(), task: str | None = None,
                 progress: bool = False) -> None:
        if not models:
            raise UnmaskError("no model given to serve")
        if len(models) > 2:
            raise UnmaskError(f"the page compares at most 2 models, got {len(models)}")
        self.models = models
        self.limits = limits
        first = next(iter(models.values()))
        self.task = task or guess_task(first)
        if self.task not in TASK_SAMPLES:
            raise UnmaskError(f"unknown task {self.task!r}; choose one of {', '.join(TASK_SAMPLES)}")
        self.progress = progress
        self._audits: dict[str, dict] = {}
        self._audit_lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def method_names() -> list[str]:
        from unmask.attribution import METHODS

        return sorted({cls.name for cls in METHODS.values()})

    @staticmethod
    def audit_available() -> bool:
        try:
            from unmask.audit import audit  # noqa: F401
        except ImportError:
            return False
        return True

    def info(self) -> dict:
        return {"models": [{"name": n, "labels": m.label_names} for n, m in self.models.items()],
                "methods": self.method_names(), "default_methods": list(DEFAULT_METHODS),
                "pairs": self.task == "rte", "task": self.task, "limits": asdict(self.limits),
                "perturbations": list(PERTURBATIONS), "audit": self.audit_available()}

    def check_input(self, text: Any, pair: Any = None) -> tuple[str, str | None]:
        """Types, emptiness, characters and tokens within the limits; returns ``(text, pair)``."""
        lim = self.limits
        if not isinstance(text, str):
            raise UnmaskError("the text must be a string")
        if pair is not None and not isinstance(pair, str):
            raise UnmaskError("the hypothesis must be a string")
        if not text.strip():
            raise UnmaskError("the text is empty: type a sentence" if self.task != "rte"
                              else "the premise is empty: type a sentence")
        pair = pair if pair is not None and pair.strip() else None
        if self.task == "rte" and pair is None:
            raise UnmaskError("this is a sentence-pair model: type a hypothesis too")
        for what, value in (("text", text), ("hypothesis", pair)):
            if value is not None and len(value) > lim.max_chars:
                raise UnmaskError(f"the {what} has {len(value)} characters, over the limit of {lim.max_chars}")
        for name, model in self.models.items():
            enc = model.tokenizer(text, pair) if pair is not None else model.tokenizer(text)
            n = len(enc["input_ids"])
            if n > min(lim.max_tokens, model.max_length):
                raise UnmaskError(f"the input has {n} word pieces for model {name}, over the limit of "
                                  f"{min(lim.max_tokens, model.max_length)}")
        return text, pair

    def check_methods(self, methods: Any) -> list[str]:
        if methods is None:
            return list(DEFAULT_METHODS)
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise UnmaskError("methods must be a list of method names")
        methods = list(dict.fromkeys(m.strip() for m in methods if m.strip()))
        if not methods:
            raise UnmaskError("pick at least one method")
        if len(methods) > self.limits.max_methods:
            raise UnmaskError(f"{len(methods)} methods requested, over the limit of {self.limits.max_methods} "
                              f"per request")
        known = self.method_names()
        for m in methods:
            if m not in known:
                raise UnmaskError(f"unknown method {m!r}; choose from {', '.join(known)}")
        return methods

    # ------------------------------------------------------------------ work
    def explain(self, text: Any, pair: Any = None, methods: Any = None) -> dict:
        from unmask.attribution import explain

        text, pair = self.check_input(text, pair)
        methods = self.check_methods(methods)
        start = time.perf_counter()
        out = []
        for name, model in self.models.items():
            records = explain(model, [text], methods=methods, pairs=[pair] if pair is not None else None,
                              on_too_long="error")
            first = next(iter(records.values()))[0]
            labels = model.label_names
            out.append({
                "name": name, "labels": labels, "prediction": first.prediction,
                "prediction_name": labels[first.prediction], "probabilities": list(first.probabilities),
                "methods": {m: _record_view(recs[0]) for m, recs in records.items()}})
        return {"text": text, "pair": pair, "models": out, "seconds": time.perf_counter() - start}

    def perturb(self, text: Any, pair: Any = None, kind: Any = "reduce") -> dict:
        from unmask.perturbation import hotflip, reduce_inputs

        if kind not in PERTURBATIONS:
            raise UnmaskError(f"unknown analysis {kind!r}; choose one of {', '.join(PERTURBATIONS)}")
        text, pair = self.check_input(text, pair)
        start = time.perf_counter()
        out = []
        pairs = [pair] if pair is not None else None
        for name, model in self.models.items():
            if kind == "reduce":
                (r,) = reduce_inputs(model, [text], pairs, on_too_long="error")
            else:
                (r,) = hotflip(model, [text], pairs, max_flips=self.limits.max_flips, on_too_long="error")
            out.append({"name": name, "result": _jsonable(r.to_dict()),
                        "final_text": model.tokenizer.convert_tokens_to_string(r.segment_tokens())})
        return {"kind": kind, "text": text, "pair": pair, "models": out, "seconds": time.perf_counter() - start}

    def audit_sample(self) -> tuple[list[str], list[str] | None]:
        from unmask.data import load_task, pairs_of

        examples = load_task(self.task, "dev", limit=self.limits.audit_examples)
        return [e.text for e in examples], pairs_of(examples)

    def audit(self) -> dict:
        """``unmask.audit.audit`` on the built-in sample for every model, computed once."""
        try:
            from unmask.audit import audit
        except ImportError:
            raise UnmaskError("the audit is not available in this version of unmask") from None
        with self._audit_lock:
            start = time.perf_counter()
            texts, pairs = self.audit_sample()
            for name, model in self.models.items():
                if name not in self._audits:
                    report = audit(model, texts, pairs=pairs, progress=self._audit_progress(name))
                    self._audits[name] = _jsonable(report.to_dict())
            return {"sample": f"first {len(texts)} {TASK_SAMPLES[self.task]} dev inputs",
                    "models": [{"name": n, "report": self._audits[n]} for n in self.models],
                    "seconds": time.perf_counter() - start}

    def _audit_progress(self, name: str):
        if not self.progress:
            return None
        return lambda stage: print(f"audit {name}: {stage}", file=sys.stderr, flush=True)


class TextInput(BaseModel):
    """A request body with the input; field types are checked by ``Service`` for clear messages."""

    model_config = ConfigDict(extra="forbid")
    text: Any = None
    pair: Any = None


class ExplainRequest(TextInput):
    methods: Any = None


class PerturbRequest(TextInput):
    kind: Any = "reduce"



def _record_view(rec) -> dict:
    """What the page draws for one ``Attribution``: tokens, signed and normalized scores, specials."""
    return {"tokens": list(rec.tokens), "scores": [float(s) for s in rec.scores],
            "normalized": [float(s) for s in rec.normalized()],
            "special": [s is None for s in rec.sequence_ids], "segments": list(rec.sequence_ids),
            "target": rec.target, "target_name": rec.target_name, "extras": _jsonable(rec.extras)}


def static_dir():
    return resources.files("unmask.server").joinpath("static")


def create_app(models: dict[str, TextClassifier], limits: Limits = Limits(), task: str | None = None,
               progress: bool = False):
    """The FastAPI application serving the page for ``models`` (one, or two to compare)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    service = Service(models, limits, task, progress)
    work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unmask-work")  # one model call at a time
    audit_work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unmask-audit")
    app = FastAPI(title="unmask", docs_url=None, redoc_url=None)
    app.state.service = service

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def run(pool: ThreadPoolExecutor, timeout: float, fn, *args):
        loop = asyncio.get_running_loop()
        try:
            result = await asyncio.wait_for(loop.run_in_executor(pool, fn, *args), timeout)
        except TimeoutError:
            return error(504, f"the request took longer than the limit of {timeout:g} s; try a shorter "
                              f"input or fewer methods")
        except UnmaskError as e:
            return error(400, str(e))
        return JSONResponse(_jsonable(result))

    @app.middleware("http")
    async def bounded_body(request: Request, call_next):
        """A declared body over ``limits.max_body`` is refused before it is read or parsed."""
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > limits.max_body:
            return error(413, f"the request body has {int(size)} bytes, over the limit of {limits.max_body}")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                problems.append("the body is not valid JSON")
                continue
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return error(422, "malformed request: " + "; ".join(problems))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error ({type(exc).__name__}): {exc}")

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(str(static_dir().joinpath("index.html")), media_type="text/html")

    @app.get("/api/info")
    async def info() -> dict:
        return service.info()

    @app.post("/api/explain")
    async def explain_endpoint(req: ExplainRequest):
        return await run(work, limits.timeout, service.explain, req.text, req.pair, req.methods)

    @app.post("/api/perturb")
    async def perturb_endpoint(req: PerturbRequest):
        return await run(work, limits.timeout, service.perturb, req.text, req.pair, req.kind)

    if service.audit_available():
        @app.post("/api/audit")
        async def audit_endpoint():
            return await run(audit_work, limits.audit_timeout, service.audit)

    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")
    return app
