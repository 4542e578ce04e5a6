"""The dashboard's session and CSRF tokens (mso.web.auth)."""

from __future__ import annotations

from mso.web import auth

TOKEN = "app-token-123"


def test_a_session_made_with_the_token_is_accepted_and_nothing_else() -> None:
    cookie = auth.new_session(TOKEN)
    nonce = auth.session_nonce(TOKEN, cookie)
    assert nonce is not None and cookie.startswith(nonce + ".")
    assert auth.session_nonce("another-token", cookie) is None
    assert auth.session_nonce(TOKEN, nonce + ".0") is None
    assert auth.session_nonce(TOKEN, nonce) is None
    assert auth.session_nonce(TOKEN, "") is None and auth.session_nonce(TOKEN, None) is None
    assert auth.new_session(TOKEN) != cookie  # a fresh nonce each login


def test_csrf_tokens_are_per_session() -> None:
    one = auth.session_nonce(TOKEN, auth.new_session(TOKEN))
    two = auth.session_nonce(TOKEN, auth.new_session(TOKEN))
    assert one and two
    assert auth.csrf_ok(TOKEN, one, auth.csrf_token(TOKEN, one))
    assert not auth.csrf_ok(TOKEN, one, auth.csrf_token(TOKEN, two))
    assert not auth.csrf_ok(TOKEN, one, None) and not auth.csrf_ok(TOKEN, one, "")
    assert not auth.csrf_ok("another-token", one, auth.csrf_token(TOKEN, one))


def test_login_token_must_match_exactly() -> None:
    assert auth.token_ok(TOKEN, TOKEN)
    assert not auth.token_ok(TOKEN, TOKEN + "x") and not auth.token_ok(TOKEN, None)
    assert not auth.token_ok(TOKEN, "")
