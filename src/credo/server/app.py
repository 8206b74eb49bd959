"""The HTTP API: OpenAI-compatible generation over `BASE` or `BASE@IDENTITY`, identity management, and the playground.

Every failure a client can cause is a CredoError or a validation error and becomes a 4xx JSON body in OpenAI's error
shape; nothing a request sends reaches the engine unchecked.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from credo.errors import CredoError, LayerError, ManifestoError, UnknownKindError
from credo.layers import kind_names
from credo.server.engines.base import PromptTooLong, RawText, Sampling
from credo.server.identities import Conflict, Identities, InvalidName, NotFound
from credo.server.schemas import ChatRequest, CompletionRequest, IdentityRequest
from credo.server.stops import StopCutter
from credo.server.worker import ServerBusy, Worker

if TYPE_CHECKING:
    from credo.base import Base
    from credo.server.engines.base import ServeEngine

STATIC = Path(__file__).parent / "static"


@dataclass
class ServeSettings:
    layers_dir: Path
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_tokens_limit: int = 1024
    default_max_tokens: int = 256
    measure_fidelity: bool = True
    # A generation holds the server's only worker: past this many seconds after its request arrived it stops (and
    # answers with what it has, finish_reason "length"); a request still queued by then gets 503.
    max_request_seconds: float = 300.0


class TooLarge(CredoError):
    """The request body is over the server's limit."""


class Unauthorized(CredoError):
    """No or a wrong API key."""


_STATUS: list[tuple[type, int, str]] = [
    (Unauthorized, 401, "authentication_error"),
    (NotFound, 404, "not_found_error"),
    (Conflict, 409, "conflict_error"),
    (TooLarge, 413, "invalid_request_error"),
    (ServerBusy, 503, "server_error"),
    (InvalidName, 400, "invalid_request_error"),
    (PromptTooLong, 400, "invalid_request_error"),
    (UnknownKindError, 400, "invalid_request_error"),
    (ManifestoError, 400, "invalid_request_error"),
    (LayerError, 400, "invalid_request_error"),
    (CredoError, 400, "invalid_request_error"),
]


def error_response(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status_code=status)


def credo_error_response(e: CredoError) -> JSONResponse:
    for cls, status, kind in _STATUS:
        if isinstance(e, cls):
            return error_response(status, str(e), kind)
    return error_response(400, str(e))


def create_app(base: Base, engine: ServeEngine, settings: ServeSettings) -> FastAPI:
    """Build the app around an already loaded base and engine; identities in `settings.layers_dir` are added now."""
    worker = Worker()
    identities = Identities(base, engine, worker, settings.layers_dir, measure_fidelity=settings.measure_fidelity)
    identities.load_all()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        identities.close()
        worker.stop()

    # The schema is published (clients and the API fuzzer read it); the interactive docs pages are not.
    app = FastAPI(title="credo", docs_url=None, redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan)
    app.state.identities, app.state.worker, app.state.engine = identities, worker, engine
    started = int(time.time())

    @app.exception_handler(CredoError)
    async def _credo(_: Request, e: CredoError) -> JSONResponse:
        return credo_error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":
            return error_response(400, json_error_message(first, getattr(e, "body", None)))
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg", "invalid request"))
        return error_response(400, message.replace("\n", " "), param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), "not_found_error" if e.status_code == 404 else "invalid_request_error")

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:  # a bug in credo, not the client's doing; say so in one line
        return error_response(500, f"internal error: {type(e).__name__}: {e}", "server_error")

    if settings.api_key:
        app.add_middleware(ApiKey, key=settings.api_key)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    # --- models and identities ----------------------------------------------------------------------------------
    def model_id(name: str | None) -> str:
        return base.name if not name else f"{base.name}@{name}"

    def model_entry(name: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": model_id(name), "object": "model", "created": started, "owned_by": "credo"}
        if name:
            entry["credo"] = identities.items[name].to_json()
        return entry

    def resolve(model: str) -> str:
        """'BASE' -> '' (the bare base); 'BASE@NAME' -> NAME, which must be a ready identity."""
        head, sep, name = model.partition("@")
        if head != base.name:
            raise NotFound(f"model {model!r} does not exist: this server serves {base.name!r} and {base.name}@IDENTITY")
        if not sep:
            return ""
        identities.ready(name)
        return name

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        ready = [n for n, i in sorted(identities.items.items()) if i.status == "ready"]
        return {"object": "list", "data": [model_entry(None)] + [model_entry(n) for n in ready]}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> dict[str, Any]:
        name = resolve(model)
        return model_entry(name or None)

    @app.get("/v1/kinds")
    async def list_kinds() -> dict[str, Any]:
        return {"object": "list", "data": kind_names()}

    @app.get("/v1/identities")
    async def list_identities() -> dict[str, Any]:
        rows = [i.to_json() | {"model": model_id(n)} for n, i in sorted(identities.items.items())]
        return {"object": "list", "base": {"name": base.name, "sha256": base.sha256, "engine": engine.name}, "data": rows}

    @app.get("/v1/identities/{name}")
    async def get_identity(name: str) -> dict[str, Any]:
        ident = identities.get(name)
        return ident.to_json() | {"model": model_id(name), "manifesto_text": identities.manifesto_text(name)}

    @app.post("/v1/identities")
    async def add_identity(req: IdentityRequest) -> JSONResponse:
        job = identities.start_compile(req.name, req.manifesto, req.kind, dict(req.settings), req.overwrite)
        if not req.wait:
            return JSONResponse(job.to_json(), status_code=202)
        await worker_wait(job.done)
        if job.stage == "error":
            return error_response(400, f"compiling {req.name!r} failed: {job.error}")
        return JSONResponse(identities.items[req.name].to_json() | {"model": model_id(req.name), "job": job.to_json()}, status_code=201)

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        return identities.job(job_id).to_json()

    @app.delete("/v1/identities/{name}")
    async def delete_identity(name: str) -> dict[str, Any]:
        await worker_run(lambda: identities.remove(name))
        return {"id": model_id(name), "object": "identity", "deleted": True}

    # --- generation ---------------------------------------------------------------------------------------------
    def sampling_for(req: ChatRequest | CompletionRequest) -> Sampling:
        asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
        max_tokens = asked or min(settings.default_max_tokens, settings.max_tokens_limit)
        if max_tokens > settings.max_tokens_limit:
            raise CredoError(f"max_tokens {max_tokens} is over this server's limit of {settings.max_tokens_limit}")
        return Sampling(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=req.stops())

    async def start(request: Request, key: str, prompt: Any, sampling: Sampling, chat: bool) -> tuple[Any, Any]:
        """Queue the generation; it stops when the client leaves (streaming or not) or the request's time is up."""
        from credo.runtime.torch_engine import GenerationStats

        stats = GenerationStats()
        stops = sampling.stop + (base.stop_strings if chat else [])

        def make(cancel: Any) -> Iterator[str]:
            if not engine.has(key):
                raise NotFound(f"identity {key!r} was removed")
            return _cut(engine.stream(key, prompt, sampling, stats, cancel), stops, stats, lstrip=chat)

        stream = worker.stream(make, deadline=time.monotonic() + settings.max_request_seconds)
        stream.watch(request.is_disconnected)
        await stream.first()
        return stream, stats

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request) -> Any:
        key = resolve(req.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        stream, stats = await start(request, key, messages, sampling_for(req), chat=True)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": rid, "created": created, "model": req.model}
        if not req.stream:
            text = "".join([p async for p in stream])
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": stats.finish_reason, "logprobs": None}
            return head | {"object": "chat.completion", "choices": [choice], "usage": usage(stats)}

        async def events() -> AsyncIterator[str]:
            chunk = head | {"object": "chat.completion.chunk"}
            yield sse(chunk | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            async for piece in stream:
                yield sse(chunk | {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            yield sse(chunk | {"choices": [{"index": 0, "delta": {}, "finish_reason": stats.finish_reason}]})
            if req.include_usage():
                yield sse(chunk | {"choices": [], "usage": usage(stats)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        key = resolve(req.model)
        stream, stats = await start(request, key, RawText(req.prompt), sampling_for(req), chat=False)
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": req.model}
        if not req.stream:
            text = "".join([p async for p in stream])
            choice = {"index": 0, "text": text, "finish_reason": stats.finish_reason, "logprobs": None}
            return head | {"choices": [choice], "usage": usage(stats)}

        async def events() -> AsyncIterator[str]:
            async for piece in stream:
                yield sse(head | {"choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]})
            yield sse(head | {"choices": [{"index": 0, "text": "", "finish_reason": stats.finish_reason, "logprobs": None}]})
            if req.include_usage():
                yield sse(head | {"choices": [], "usage": usage(stats)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # --- misc ---------------------------------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "base": base.name, "engine": engine.name, "identities": len(identities.items),
                "requests": dict(worker.counts)}

    @app.get("/")
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        path = (STATIC / name).resolve()
        if path.parent != STATIC.resolve() or not path.is_file():
            raise NotFound(f"no static file {name!r}")
        return FileResponse(path)

    async def worker_wait(event: Any) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, event.wait)

    async def worker_run(fn: Any) -> Any:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, fn)

    return app


def _cut(pieces: Iterator[str], stops: list[str], stats: Any, lstrip: bool) -> Iterator[str]:
    """Apply stop strings inside the worker, so generation ends at the stop rather than a few tokens later."""
    cutter = StopCutter(stops)
    started = not lstrip
    try:
        for piece in pieces:
            out = cutter.feed(piece)
            if not started:
                out = out.lstrip()
                started = bool(out)
            if out:
                yield out
            if cutter.stopped:
                stats.finish_reason = "stop"
                return
        tail = cutter.flush()
        tail = tail if started else tail.lstrip()
        if tail:
            yield tail
    finally:
        close = getattr(pieces, "close", None)
        if close:
            close()


def json_error_message(error: dict[str, Any], body: Any) -> str:
    """"request body is not valid JSON: Expecting value at line 2, column 8" from FastAPI's json_invalid error."""
    reason = str((error.get("ctx") or {}).get("error") or "JSON decode error")
    loc = error.get("loc", ())
    pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    if pos is None:
        return f"request body is not valid JSON: {reason}"
    text = body if isinstance(body, str) else ""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"request body is not valid JSON: {reason} at line {line}, column {column}"


def usage(stats: Any) -> dict[str, int]:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens, "total_tokens": stats.prompt_tokens + stats.completion_tokens}


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class ApiKey:
    """ASGI middleware: /v1/ requires 'Authorization: Bearer KEY'. Plain ASGI, not starlette's BaseHTTPMiddleware, whose
    wrapped receive never reports that a client has gone (the server must notice, to stop generating)."""

    def __init__(self, app: Any, key: str):
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith("/v1/"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await credo_error_response(Unauthorized("missing or wrong API key: send 'Authorization: Bearer KEY'"))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: read at most `limit` bytes of body; a larger one gets 413 before any handler runs."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = TooLarge(f"request body is over this server's limit of {self.limit} bytes")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await credo_error_response(too_big)(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await credo_error_response(too_big)(scope, receive, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
