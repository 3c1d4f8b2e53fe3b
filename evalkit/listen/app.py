"""The web pages of a listening test: Starlette routes, Jinja2 templates, served by uvicorn.

Why Starlette (not FastAPI, Flask or a hand-rolled http.server): the pages are server-rendered HTML
forms, so FastAPI's additions (pydantic models, OpenAPI, JSON validation errors answered as 422)
would go unused, and its form parameters need python-multipart, one more dependency. Starlette is
the ASGI toolkit FastAPI is built on: routing, exception handlers that turn every refusal into an
HTML page with the right status, FileResponse for clips (with range requests, which browsers use to
seek in audio) and a TestClient for HTTP-level tests. It and uvicorn are already in every evalkit
environment (mlflow's server depends on both), so the `listen` extra costs no new download. Flask
would do too, but under its WSGI server sqlite writes would share one worker model we do not
control; uvicorn runs the store's blocking calls in a thread pool, each with its own connection.
Jinja2 renders the pages through evalkit.report.Templates (autoescaped, StrictUndefined), as the
reports do.

Routes:
    GET  /                      start page: the test's instructions and a name/code field
    POST /start                 rater=NAME -> 303 to /r/NAME (400 for a name that is not usable)
    GET  /r/{rater}             the rater's next unrated item, or the done page
    POST /r/{rater}             one rating form (item, token, score | choice | s0..sN) -> 303 back
                                to /r/{rater} (reloading never resubmits); 400 bad input, 404 an item
                                this rater does not have, 409 a replayed form or an item rated
                                already, 503 the database could not take it (nothing saved)
    GET  /clip/{id}.wav         a clip by opaque id (404 unknown)
    GET  /healthz               "ok", for whoever starts the server and waits for it
There is no export route on purpose: ratings and run ids are for the engineer's `--export`, not
for raters, who could otherwise unblind the test.
"""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from ..errors import EvalkitError, MissingExtra
from . import plan
from .catalog import Catalog
from .store import Score, Store, Submission, issue_token, token_ok

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATES = ("base.html.j2", "start.html.j2", "rate.html.j2", "done.html.j2", "error.html.j2")
MAX_FORM_BYTES = 16 * 1024  # a rating form is a few hundred bytes
_RATER = re.compile(r"^(?=.*\w)[\w.-]{1,64}$")  # not dots alone: /r/.. would leave the page
# ITU-T P.800 absolute category rating: the five labels of the MOS scale.
MOS_LABELS = ((5, "Excellent"), (4, "Good"), (3, "Fair"), (2, "Poor"), (1, "Bad"))
AB_CHOICES = ("A", "B", "none")
MUSHRA_MAX = 100


def normalize_rater(text: str) -> str | None:
    """The rater id of what was typed on the start page: NFKC, trimmed, case-folded, inner spaces
    as '-', so "Kim Min" and "kim min " are the same rater coming back; None when it is not 1-64
    letters, digits, '.', '_' or '-'."""
    rater = re.sub(r"\s+", "-", unicodedata.normalize("NFKC", text).strip().casefold())
    return rater if _RATER.fullmatch(rater) else None


class Refusal(Exception):
    """Bad input from a browser: answered with `status` and `message` on an HTML page. (A plain
    exception class: Starlette and contextlib set attributes on exceptions they pass along.)"""

    def __init__(self, status: int, message: str, next_url: str | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.next_url = next_url  # where the page's link goes (default: the start page)


def scores(catalog: Catalog, shown: plan.Presentation, form: dict[str, str]) -> tuple[Score, ...]:
    """The form's values mapped from the slots the rater saw to the systems they rate; a value
    outside the scale is a Refusal (400) that says what the scale is."""
    systems = [catalog.clips[c] for c in shown.clips]
    kinds = {s.key: s.kind for s in catalog.selection.systems}

    def score(slot: int, value: float) -> Score:
        clip = systems[slot]
        return Score(clip.system, kinds[clip.system], clip.utterance_id, value)

    if catalog.test == "mos":
        raw = form.get("score")
        if raw is None or raw == "":
            raise Refusal(400, "choose a score from 1 (bad) to 5 (excellent) before submitting")
        if raw not in {str(v) for v, _ in MOS_LABELS}:
            raise Refusal(400, f"the score must be a whole number from 1 to 5 (got {raw[:20]!r})")
        return (score(0, float(raw)),)
    if catalog.test == "ab":
        raw = form.get("choice")
        if raw not in AB_CHOICES:
            got = "nothing" if raw is None else repr(raw[:20])
            raise Refusal(400, f"the choice must be A, B or none (no preference) (got {got})")
        share = {"A": 1.0, "B": 0.0, "none": 0.5}[raw]  # slot A's share of the preference
        return score(0, share), score(1, 1.0 - share)
    out = []
    for slot in range(len(systems)):
        raw = form.get(f"s{slot}", "")
        if not raw.isdigit() or not 0 <= int(raw) <= MUSHRA_MAX:  # isdigit: no sign, no decimals
            raise Refusal(400, f"slider {slot + 1} must be a whole number from 0 to {MUSHRA_MAX} (got {raw[:20]!r})")
        out.append(score(slot, float(raw)))
    return tuple(out)


def create_app(catalog: Catalog, store: Store, on_rating: Callable[[str], None] | None = None) -> Any:
    """The ASGI app of a listening test over `catalog`, storing into `store`. `on_rating(rater)` is
    called after each stored form (the CLI counts them)."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException
        from starlette.requests import Request
        from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
        from starlette.routing import Route
    except ImportError:
        raise MissingExtra("starlette", "listen") from None
    from ..report import Templates

    templates = Templates(TEMPLATE_DIR, TEMPLATES, what="listening test")
    test = catalog.test

    def page(name: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = templates.render(name, test=test, **context)
        # No caching: a reload must show the rater's current item, never a stale form.
        return HTMLResponse(html, status_code=code, headers={"Cache-Control": "no-store"})

    def refused(exc: Refusal) -> HTMLResponse:
        return page("error.html.j2", exc.status, status=exc.status, message=exc.message,
                    next_url=exc.next_url or "/")

    def rater_of(request: Request) -> str:
        rater = normalize_rater(str(request.path_params["rater"]))
        if rater is None:
            raise Refusal(400, "a rater id is 1-64 letters, digits, '.', '_' or '-'")
        return rater

    async def form_of(request: Request) -> dict[str, str]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise Refusal(400, "send the form as application/x-www-form-urlencoded, as the page's form does")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise Refusal(413, f"the form is larger than {MAX_FORM_BYTES} bytes; a rating form is far smaller")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise Refusal(400, "the form is not valid UTF-8 form data") from None
        form: dict[str, str] = {}
        for k, v in pairs:
            if k in form:
                raise Refusal(400, f"the form gives {k!r} twice")
            form[k] = v
        return form

    async def start_page(request: Request) -> Response:
        return page("start.html.j2", items=len(catalog.items), repeats=plan.repeats_for(len(catalog.items)))

    async def start(request: Request) -> Response:
        form = await form_of(request)
        rater = normalize_rater(form.get("rater", ""))
        if rater is None:
            raise Refusal(400, "enter a name or code of 1-64 letters, digits, '.', '_' or '-' "
                               "(spaces become '-'); use the same one to continue later")
        return RedirectResponse(f"/r/{quote(rater)}", status_code=303)

    async def rate_page(request: Request) -> Response:
        rater = rater_of(request)
        rated = await run_in_threadpool(store.rated, rater)
        shown, total = plan.next_unrated(catalog, rater, rated)
        if shown is None:
            return page("done.html.j2", rater=rater, total=total)
        labels = {"mos": [""], "ab": ["A", "B"]}.get(test) or [str(i + 1) for i in range(len(shown.clips))]
        return page("rate.html.j2", rater=rater, rater_url=quote(rater), position=shown.position + 1, total=total,
                    done=len(rated), item=shown.item.id, text=shown.item.text,
                    token=issue_token(store.secret, rater, shown.item.id),
                    clips=[{"url": f"/clip/{c}.wav", "label": label, "slot": i}
                           for i, (c, label) in enumerate(zip(shown.clips, labels, strict=True))],
                    mos_labels=MOS_LABELS, mushra_max=MUSHRA_MAX)

    async def submit(request: Request) -> Response:
        rater = rater_of(request)
        back = f"/r/{quote(rater)}"
        form = await form_of(request)
        item_id, token = form.get("item", ""), form.get("token", "")
        if catalog.item(item_id) is None:
            raise Refusal(404, f"this test has no item {item_id[:40]!r}", back)
        shown = plan.presentation(catalog, rater, item_id)
        if shown is None:
            raise Refusal(404, f"item {item_id[:40]!r} is not in the test of rater {rater!r}", back)
        if not token_ok(store.secret, rater, item_id, token):
            raise Refusal(400, "this form's token does not belong to this rater and item: reload the page "
                               "and rate again", back)
        try:
            values = scores(catalog, shown, form)
        except Refusal as exc:
            exc.next_url = back  # the way on is the same item, to rate it again
            raise
        sub = Submission(token, rater, item_id, test, shown.item.repeat_of, values)
        try:
            outcome = await run_in_threadpool(store.submit, sub)
        except sqlite3.Error as exc:
            raise Refusal(503, f"the rating could not be stored ({' '.join(str(exc).split())[:120]}); "
                               "it was not saved: go back and submit it again", back) from None
        if outcome == "replayed":
            raise Refusal(409, "this form was already submitted: its rating is stored once and was not "
                               "changed. Continue with the next item.", back)
        if outcome == "already-rated":
            raise Refusal(409, "you already rated this item (in another tab or from an older page): the "
                               "first rating is kept. Continue with the next item.", back)
        if on_rating is not None:
            on_rating(rater)
        return RedirectResponse(back, status_code=303)

    async def clip(request: Request) -> Response:
        found = catalog.clips.get(str(request.path_params["clip"]))
        if found is None or not found.path.is_file():
            raise Refusal(404, "no such clip")
        return FileResponse(found.path, media_type="audio/wav", headers={"Cache-Control": "private, max-age=3600"})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def on_refusal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        return refused(exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        # Starlette's own refusals: an unknown path (404), a wrong method (405).
        assert isinstance(exc, HTTPException)
        message = {404: "no such page", 405: "this page does not take that method"}.get(exc.status_code,
                                                                                       str(exc.detail))
        return refused(Refusal(exc.status_code, message))

    async def on_error(request: Request, exc: Exception) -> Response:
        # A bug, not bad input: one line and no traceback on the page (the server log has it).
        return PlainTextResponse("internal error: the rating was not saved; reload the page", status_code=500)

    return Starlette(
        routes=[Route("/", start_page, methods=["GET"]), Route("/start", start, methods=["POST"]),
                Route("/r/{rater}", rate_page, methods=["GET"]), Route("/r/{rater}", submit, methods=["POST"]),
                Route("/clip/{clip}.wav", clip, methods=["GET"]), Route("/healthz", health, methods=["GET"])],
        exception_handlers={Refusal: on_refusal, HTTPException: on_http, Exception: on_error})


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: any free port), or one line saying why not."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise EvalkitError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): pass another --port") from None
    return sock


def serve(app: Any, sock: socket.socket) -> None:
    """Serves `app` on `sock` until Ctrl-C or SIGTERM, then returns normally (a graceful stop: the
    requests in flight finish, and every stored rating is already committed)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingExtra("uvicorn", "listen") from None
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    main = threading.current_thread() is threading.main_thread()
    handled = (signal.SIGINT, signal.SIGTERM)
    # uvicorn stops on these and then re-raises them to the handlers it found: make those no-ops
    # for the duration, so a stop ends here instead of as an interrupt of the whole command.
    previous = {s: signal.signal(s, lambda *_: None) for s in handled} if main else {}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
