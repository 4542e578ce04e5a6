"""payments: a fake payment provider with deterministic answers.

    POST /charge {order_id, amount_cents} -> 200 {status: approved|declined, ...}
    GET  /payments?limit=N                -> recent payments and running totals

A charge is approved when the amount is at most $PAYMENTS_LIMIT_CENTS
(default 50000, i.e. $500) and declined otherwise, so demos and tests can
trigger both outcomes. Charging the same order twice returns the first answer.

The provider's API key is a secret: mso delivers it as the file
$MSO_SECRETS/api_key. It signs receipts and is never logged. Ready once the
key is loaded and the kvstore answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path

from shop.common import App, HTTPError, Request, Response, json_response, log, serve
from shop.kv import KV

kv = KV.from_env()
app = App("payments", ready=lambda: None if kv.ping() else "kvstore unreachable")
LIMIT_CENTS = int(os.environ.get("PAYMENTS_LIMIT_CENTS", "50000"))
API_KEY = b""


def load_api_key() -> bytes:
    """The secret, from mso's secrets folder (or ./secrets when run by hand)."""
    folder = os.environ.get("MSO_SECRETS")
    path = Path(folder, "api_key") if folder else Path("secrets", "payments_api_key")
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        sys.exit(f"payments: cannot read the api key at {path}: {exc.strerror}")
    if not key:
        sys.exit(f"payments: the api key at {path} is empty")
    return key


@app.post("/charge")
def charge(req: Request) -> Response:
    body = req.json()
    order_id, amount = body.get("order_id"), body.get("amount_cents")
    if not isinstance(order_id, int) or order_id < 1:
        raise HTTPError(400, "order_id must be a positive integer")
    if not isinstance(amount, int) or amount < 1:
        raise HTTPError(400, "amount_cents must be a positive integer")
    key = f"payment:{order_id:08d}"
    if (previous := kv.get(key)) is not None:
        return json_response(json.loads(previous))
    approved = amount <= LIMIT_CENTS
    receipt = hmac.new(API_KEY, f"{order_id}:{amount}".encode(), hashlib.sha256).hexdigest()[:16]
    payment = {
        "order_id": order_id, "amount_cents": amount,
        "status": "approved" if approved else "declined",
        "reason": None if approved else f"amount over the {LIMIT_CENTS / 100:.2f} limit",
        "receipt": receipt if approved else None,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    kv.set(key, json.dumps(payment))
    kv.incr(f"stats:payments:{payment['status']}", 1)
    if approved:
        kv.incr("stats:payments:total_cents", amount)
    return json_response(payment)


@app.get("/payments")
def list_payments(req: Request) -> Response:
    limit = req.query_int("limit", 20)
    keys = kv.keys("payment:")[-limit:] if limit else []
    recent = [json.loads(raw) for key in reversed(keys) if (raw := kv.get(key)) is not None]
    totals = {name: int(kv.get(f"stats:payments:{name}") or 0)
              for name in ("approved", "declined", "total_cents")}
    return json_response({"payments": recent, **totals, "limit_cents": LIMIT_CENTS})


if __name__ == "__main__":
    API_KEY = load_api_key()
    log("payments api key loaded")
    serve(app)
