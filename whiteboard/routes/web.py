"""What every HTML page shares: the web folder, templates, static files, form tokens, cookies.

The templates and static files live in the repository's `web/` folder; an installed wheel
carries the same folder as `whiteboard/web` (pyproject force-includes it), and that one wins.

Forms that are posted before anyone is signed in (sign-in, display pairing) carry a hidden
`form_token`: a signed, timed nonce. Together with the Origin check (browsers send Origin on
every form POST) it refuses cross-site posts; once signed in, pages carry the session's own
CSRF token instead.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from whiteboard.errors import WhiteboardError
from whiteboard.routes.auth import SESSION_ABSOLUTE_SECONDS, SESSION_COOKIE, Caller, identify
from whiteboard.routes.origin import is_https, origin_allowed

#: Wards keep London time: every HH:MM on a screen is Europe/London.
WARD_TZ = ZoneInfo("Europe/London")
FORM_TOKEN_SECONDS = 2 * 3600


def find_web_dir() -> Path:
    """`whiteboard/web` inside an installed wheel, else the repository's `web/`."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "web"
    if (packaged / "templates").is_dir():
        return packaged
    return package.parent / "web"


WEB_DIR = find_web_dir()
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))


class Static(StaticFiles):
    """Static files that browsers revalidate (ETag) on every load, so an upgrade shows at once."""

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def static_app() -> Static:
    return Static(directory=str(WEB_DIR / "static"))


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    caller: Caller | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    ctx = {"caller": caller, "csrf": caller.csrf if caller is not None else None, **(context or {})}
    response = templates.TemplateResponse(request, name, ctx, status_code=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    if caller is not None and caller.via == "session":
        refresh_session(request, response)
    return response


def refresh_session(request: Request, response: Response) -> bool:
    """Sign the session cookie again with a fresh timestamp: the 15-minute idle limit counts
    from the last page or keep-alive, while the absolute limit and the CSRF token stay put."""
    cookies = request.app.state.cookies
    raw = request.cookies.get(SESSION_COOKIE)
    data = cookies.read_session(raw) if raw else None
    if data is None:
        return False
    value = cookies.sessions.dumps(data)
    set_cookie(request, response, SESSION_COOKIE, value, max_age=SESSION_ABSOLUTE_SECONDS)
    return True


# --- who is looking ------------------------------------------------------------------------------


async def who(conn: HTTPConnection) -> Caller | None:
    """The caller, or None (a bad bearer header on a page is treated as nobody)."""
    state = conn.app.state
    try:
        return await identify(conn, state.cookies, state.reader)
    except WhiteboardError:
        return None


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)


async def staff(request: Request) -> Caller | RedirectResponse:
    """A signed-in staff caller (session or bearer), or a 303 to the sign-in page."""
    caller = await who(request)
    if caller is None or caller.principal.kind == "display":
        return to_login(request)
    return caller


def safe_next(target: str | None) -> str:
    """A local path to go back to after sign-in; anything else becomes `/`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(ch) < 32 or ch == "\\" for ch in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


# --- form tokens and origins -----------------------------------------------------------------------


def _form_signer(conn: HTTPConnection) -> URLSafeTimedSerializer:
    state = conn.app.state
    signer: URLSafeTimedSerializer | None = getattr(state, "form_signer", None)
    if signer is None:
        signer = URLSafeTimedSerializer(state.settings.secret_key, salt="whiteboard.form")
        state.form_signer = signer
    return signer


def form_token(conn: HTTPConnection, purpose: str) -> str:
    return str(_form_signer(conn).dumps({"p": purpose, "n": secrets.token_urlsafe(8)}))


def form_token_ok(conn: HTTPConnection, purpose: str, token: str | None) -> bool:
    if not token or len(token) > 500:
        return False
    try:
        data = _form_signer(conn).loads(token, max_age=FORM_TOKEN_SECONDS)
    except BadSignature:
        return False
    return isinstance(data, dict) and data.get("p") == purpose


def same_origin_post(conn: HTTPConnection) -> bool:
    """False when a browser says the form came from another site (Origin, else Referer)."""
    settings = conn.app.state.settings
    origin = conn.headers.get("origin")
    if origin is not None:
        return origin_allowed(conn, origin, settings)
    referer = conn.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return origin_allowed(conn, f"{parts.scheme}://{parts.netloc}", settings)
    return True  # not a browser, or one that sends neither: the form token still has to be right


# --- cookies ---------------------------------------------------------------------------------------


def set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_https(request.scope, request.app.state.settings),
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_https(request.scope, request.app.state.settings),
    )


# --- time ----------------------------------------------------------------------------------------


def ward_now() -> datetime:
    return datetime.now(WARD_TZ)
