"""The dashboard's login, session cookie and CSRF tokens, all derived from the app token.

Like a notebook server: `mso dashboard` prints `/login?token=TOKEN` (the app's API
token, `.mso/api-token`, readable only by its owner); a right token sets a session
cookie and redirects to `/`, and every other request needs that cookie.

Sessions are stateless: the cookie is `NONCE.MAC` with `MAC = HMAC-SHA256(token,
"session:" + NONCE)`, and the session's CSRF token is `HMAC-SHA256(token, "csrf:" +
NONCE)`. Nothing is stored, so a dashboard restarted by a new daemon still accepts its
cookies, and a new app token (a new `.mso/`) invalidates every session at once. Every
comparison uses `hmac.compare_digest`.

The cookie is HttpOnly (scripts never see it), SameSite=Strict (another site cannot make
the browser send it, the first line against CSRF) and Path=/. It is not Secure: the
dashboard is plain HTTP on 127.0.0.1, where browsers would refuse a Secure cookie. Every
action is a POST that must also carry the session's CSRF token (a hidden form field
`csrf` or an `X-CSRF-Token` header), the second line.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "mso_session"


def _mac(token: str, purpose: str, nonce: str) -> str:
    return hmac.new(token.encode(), f"{purpose}:{nonce}".encode(), hashlib.sha256).hexdigest()


def token_ok(token: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def new_session(token: str) -> str:
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_mac(token, 'session', nonce)}"


def session_nonce(token: str, cookie: str | None) -> str | None:
    """The session's nonce when `cookie` is one this token made, else None."""
    if not cookie or "." not in cookie:
        return None
    nonce, mac = cookie.split(".", 1)
    if not hmac.compare_digest(mac.encode(), _mac(token, "session", nonce).encode()):
        return None
    return nonce


def csrf_token(token: str, nonce: str) -> str:
    return _mac(token, "csrf", nonce)


def csrf_ok(token: str, nonce: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(),
                                                     csrf_token(token, nonce).encode())
