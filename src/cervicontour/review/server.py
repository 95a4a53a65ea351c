"""The review server: a FastAPI app over one predict output folder, and ``serve`` to run it locally.

Security, as Jupyter does it: a random token is printed in the URL and required on every request
(``?token=``, the ``X-Review-Token`` header, or the cookie the page sets after the first request);
it binds 127.0.0.1 unless told otherwise and refuses a non-loopback address without
``allow_remote``; files are resolved from the names the server lists itself (see
:mod:`cervicontour.review.cases`), so a path sent by the browser never reaches the file system,
and a symbolic link leading out of the output folder is not listed.

Bad requests are answered 4xx with a message, never 500: an unusable body (not JSON, the wrong
shape, over :data:`MAX_BODY_BYTES`) or a file the page cannot use (a corrupt mask or log) is 400,
413 or 422 with what was expected and what to do. A corrupt ``review.json`` is reported for its
case only (``log_error`` in the case list and summary); the other cases keep working.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from cervicontour.errors import InputError
from cervicontour.structures import UnknownStructureError

try:
    from fastapi import Body, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise InputError(f"the review page needs FastAPI and uvicorn ({exc.name} is missing); install the extra: pip install 'cervicontour[review]'") from None

from cervicontour.review import cases as _cases
from cervicontour.review import correct as _correct
from cervicontour.review import decisions as _decisions

STATIC_DIR = Path(__file__).parent / "static"
NIIVUE_JS = STATIC_DIR / "vendor" / "niivue.js"
#: The largest request body accepted (a review of every mask with long comments is a few kB).
MAX_BODY_BYTES = 1 << 20
COOKIE = "cervicontour_review_token"
HEADER = "x-review-token"
_NII = "application/octet-stream"


def check_host(host: str, *, allow_remote: bool = False) -> str:
    """The host to bind, when it is a loopback address or remote access was asked for.

    Raises:
        InputError: ``host`` (e.g. ``0.0.0.0``) is reachable from other machines and
            ``allow_remote`` is false.
    """
    if host == "localhost":
        return host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise InputError(f"--host {host} would let other machines reach patient images; expected 127.0.0.1 (the default) — "
                         "add --allow-remote only on a network you trust")
    return host


def create_app(out_dir: str | os.PathLike, *, token: str, warm: bool = False, medsam=None) -> FastAPI:
    """The ASGI app serving ``out_dir``; every request must carry ``token``.

    With ``warm``, the first case's previews are built in a background thread right away, so the
    page's first view does not wait for them. ``medsam``: a callable returning the box segmenter
    for corrections (default: the shipped LiteMedSAM, loaded on the first box; tests pass a stand-in).

    Raises:
        InputError: ``out_dir`` is not a folder, or the token is shorter than 16 characters.
    """
    out_dir = Path(out_dir).resolve()
    _cases.list_cases(out_dir)  # fails early on a missing folder
    if len(token) < 16:
        raise InputError("the review token must be at least 16 characters; leave it out to get a random one")
    cache = _cases.VolumeCache()
    segmenter = _correct.Segmenter(medsam)
    if warm:
        threading.Thread(target=_warm, args=(out_dir, cache), daemon=True).start()
    app = FastAPI(title="cervicontour review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)

    @app.exception_handler(InputError)
    async def unusable_input(request: Request, exc: InputError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(UnknownStructureError)
    async def unknown_structure(request: Request, exc: UnknownStructureError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        given = request.query_params.get("token") or request.headers.get(HEADER) or request.cookies.get(COOKIE) or ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "missing or wrong token; open the URL that `cervicontour review` printed"}, status_code=403)
        response = await call_next(request)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self' blob: data:"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def case_of(patient_id: str) -> Path:
        try:
            return _cases.case_dir(out_dir, patient_id)
        except KeyError:
            raise HTTPException(404, f"no case {patient_id!r} in this output folder") from None

    def mask_of(case: Path, mask_id: str) -> _cases.MaskFile:
        try:
            return _cases.find_mask(case, mask_id)
        except KeyError:
            raise HTTPException(404, f"no mask {mask_id!r} in {case.name}") from None

    def log_of(case: Path) -> tuple[list, str | None]:
        """The case's review log, or ``[]`` and the reason it cannot be read (that case only)."""
        try:
            return _decisions.read_log(case), None
        except InputError as exc:
            return [], str(exc)

    def body_of(body) -> dict:
        if not isinstance(body, dict):
            raise InputError(f"expected a JSON object as the request body, got {type(body).__name__}")
        return body

    @app.get("/")
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

    @app.get("/api/cases")
    def list_cases():
        rows = []
        for patient_id in _cases.list_cases(out_dir):
            case = out_dir / patient_id
            info = _prediction(case)
            log, log_error = log_of(case)
            rows.append({"patient_id": patient_id, "review_closely": info.get("review_closely", []), "out_of_scope": info.get("out_of_scope", []),
                         "dicom": _cases.is_dicom_case(case), "reviews": len(log), "log_error": log_error})
        return {"out_dir": str(out_dir), "cases": rows, "niivue": NIIVUE_JS.is_file()}

    @app.get("/api/cases/{patient_id}")
    def case_summary(patient_id: str):
        from cervicontour.structures import display_colour
        from cervicontour.structures import COMPOUND

        case = case_of(patient_id)
        info = _prediction(case)
        records = info.get("structures", {})
        log, log_error = log_of(case)
        composed = {c["id"]: {"volume_cc": c["volume_cc"]} for e in log if e.get("action") == "compose" for c in e.get("compositions", [])}
        composed |= {e["id"]: {"volume_cc": e["volume_cc"]["after"]} for e in log if e.get("action") == "edit" and "id" in e}
        masks = []
        for number, mask in enumerate(_cases.mask_files(case)):
            record = records.get(mask.name, {}) if mask.kind == "draft" else composed.get(mask.id, {})
            masks.append({"id": mask.id, "name": mask.name, "kind": mask.kind, "colour": display_colour(mask.name, number),
                          "volume_cc": record.get("volume_cc"), "uncertainty": record.get("uncertainty"),
                          "review_closely": bool(record.get("review_closely")), "reasons": record.get("reasons", [])})
        present = {m.name for m in _cases.mask_files(case) if m.kind == "sub"}
        source = _cases.ct_source(case)
        return {
            "patient_id": patient_id, "model": info.get("model", {}), "input": info.get("input", {}),
            "rule_changes": info.get("rule_changes", []), "disclaimer": info.get("disclaimer", "draft contours for clinician review"),
            "out_of_scope": info.get("out_of_scope", []),
            "ct": source is not None, "dicom": _cases.is_dicom_case(case), "masks": masks,
            "parts": {target: [{"name": p, "present": p in present} for p in parts] for target, parts in COMPOUND.items()},
            "log": log, "log_error": log_error,
        }

    @app.get("/api/cases/{patient_id}/findings")
    def findings(patient_id: str):
        from cervicontour.io import read_nifti
        from cervicontour.rules import check, sort_findings

        case = case_of(patient_id)
        drafts = {m.name: read_nifti(m.path) for m in _cases.mask_files(case) if m.kind == "draft"}
        found = sort_findings(check(drafts, patient_id=patient_id)) if drafts else []
        return {"findings": [_finding(f) for f in found]}

    @app.get("/api/cases/{patient_id}/ct.nii.gz")
    def ct_full(patient_id: str):
        return Response(_cases.ct_bytes(case_of(patient_id), cache, preview=False), media_type=_NII)

    @app.get("/api/cases/{patient_id}/ct-preview.nii")
    def ct_preview(patient_id: str):
        return Response(_cases.ct_bytes(case_of(patient_id), cache, preview=True), media_type=_NII)

    @app.get("/api/cases/{patient_id}/masks/{mask_id:path}")
    def mask_full(patient_id: str, mask_id: str):
        return FileResponse(mask_of(case_of(patient_id), mask_id).path, media_type=_NII)

    @app.get("/api/cases/{patient_id}/preview/{mask_id:path}")
    def mask_preview(patient_id: str, mask_id: str):
        mask = mask_of(case_of(patient_id), mask_id.removesuffix(".preview.nii"))
        return Response(_cases.mask_preview_bytes(mask, cache), media_type=_NII)

    @app.get("/api/cases/{patient_id}/review")
    def review_log(patient_id: str):
        return {"entries": _decisions.read_log(case_of(patient_id))}

    @app.post("/api/cases/{patient_id}/decisions")
    def save_decisions(patient_id: str, body=Body(...)):
        body = body_of(body)
        entry = _decisions.record_decisions(case_of(patient_id), body.get("reviewer"), body.get("decisions"))
        return {"entry": entry}

    @app.post("/api/cases/{patient_id}/compose")
    def compose(patient_id: str, body=Body(...)):
        body = body_of(body)
        results = _decisions.compose(case_of(patient_id), body.get("reviewer"), body.get("choices"))
        return {"compositions": results}

    @app.post("/api/cases/{patient_id}/rtstruct")
    def rtstruct(patient_id: str, body=Body(...)):
        return _decisions.export_accepted_rtstruct(case_of(patient_id), body_of(body).get("reviewer"))

    @app.post("/api/cases/{patient_id}/medsam/propose")
    def medsam_propose(patient_id: str, body=Body(...)):
        body = body_of(body)
        return _correct.propose(case_of(patient_id), body.get("mask"), body.get("start_mm"), body.get("end_mm"), segmenter)

    @app.get("/api/cases/{patient_id}/proposals/{proposal_id}.nii.gz")
    def proposal_mask(patient_id: str, proposal_id: str):
        image, _ = _correct.find_proposal(case_of(patient_id), proposal_id)
        return FileResponse(image, media_type=_NII)

    @app.post("/api/cases/{patient_id}/medsam/accept")
    def medsam_accept(patient_id: str, body=Body(...)):
        body = body_of(body)
        return {"entry": _correct.accept(case_of(patient_id), str(body.get("proposal")), body.get("reviewer"))}

    @app.post("/api/cases/{patient_id}/medsam/discard")
    def medsam_discard(patient_id: str, body=Body(...)):
        return _correct.discard(case_of(patient_id), str(body_of(body).get("proposal")))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before the app sees it.

    Checks ``Content-Length`` first, then counts a chunked body as it arrives (buffered, at most
    ``limit`` bytes, and handed on whole).
    """

    def __init__(self, app, *, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = declared is not None and (not declared.isdigit() or int(declared) > self.limit)
        body, more = b"", not too_big
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay(message, receive), send)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            too_big = len(body) > self.limit
            more = more and not too_big
        if too_big:
            response = JSONResponse({"detail": f"request body over {self.limit} bytes; expected a review of a few kB — send fewer or shorter comments"}, status_code=413)
            return await response(scope, receive, send)
        return await self.app(scope, _replay({"type": "http.request", "body": body, "more_body": False}, receive), send)


def _replay(first: dict, receive):
    """An ASGI ``receive`` that returns ``first`` once, then the client's own messages (disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replayed


def _warm(out_dir: Path, cache: _cases.VolumeCache) -> None:
    """Build the first case's previews (errors are left for the page's own requests to report)."""
    try:
        ids = _cases.list_cases(out_dir)
        if not ids:
            return
        case = out_dir / ids[0]
        _cases.ct_bytes(case, cache, preview=True)
        for mask in _cases.mask_files(case):
            if mask.kind != "sub":
                _cases.mask_preview_bytes(mask, cache)
    except Exception:  # noqa: BLE001 - a warm-up never takes the server down
        pass


def _prediction(case: Path) -> dict:
    from cervicontour.export.provenance import read_prediction_record

    try:
        record = read_prediction_record(case)
        return record.to_dict() if record is not None else {}
    except InputError:
        return {}


def _finding(finding) -> dict:
    data = finding.to_dict()
    return {k: (v.value if hasattr(v, "value") else v) for k, v in data.items()}


def _uvicorn():
    try:
        import uvicorn
    except ImportError:
        raise InputError("the review page needs uvicorn; install the extra: pip install 'cervicontour[review]'") from None
    return uvicorn


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port (0 picks a free one)") from None
    sock.listen(128)  # connections to the printed URL wait for the server instead of being refused
    return sock


def _url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def serve(out_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False,
          token: str | None = None, on_ready=print) -> None:
    """Serve the review page until interrupted; ``on_ready`` gets the URL with the token.

    Raises:
        InputError: a remote host without ``allow_remote``, a missing folder, a busy port.
    """
    uvicorn = _uvicorn()
    host = check_host(host, allow_remote=allow_remote)
    token = token or secrets.token_urlsafe(24)
    app = create_app(out_dir, token=token, warm=True)
    sock = _bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    on_ready(_url(host, sock.getsockname()[1], token))
    server.run(sockets=[sock])


@contextlib.contextmanager
def running(out_dir: str | os.PathLike, *, host: str = "127.0.0.1", token: str | None = None, warm: bool = False, medsam=None):
    """Run the server in a background thread on a free port; yields the URL (with the token).

    For tests and benchmarks::

        with running("out/pred") as url:
            ...
    """
    uvicorn = _uvicorn()
    token = token or secrets.token_urlsafe(24)
    app = create_app(out_dir, token=token, warm=warm, medsam=medsam)
    sock = _bind(check_host(host), 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield _url(host, sock.getsockname()[1], token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
