"""orders: places orders by reserving stock at inventory and charging payments.

    POST /orders {sku, qty}  -> 201 the order (status "paid")
                                402 the order (status "declined"; stock put back)
                                404 unknown product, 409 out of stock
                                502/503 a dependency failed (stock put back)
    GET  /orders?limit=N     -> {"orders": [...]} newest first
    GET  /orders/{id}        -> one order

Also served under /api/orders for the gateway route. Orders are kept in the
kvstore as `order:<8-digit id>`. Ready when the kvstore answers.

Placing an order is a tiny saga: reserve, charge, record. A step that fails
after the reservation releases the stock again, so a declined card or a
payments outage never leaks inventory.
"""

from __future__ import annotations

import json
import time
from typing import Any

from shop.common import App, HTTPError, Request, Response, UpstreamError, call, json_response, log, serve
from shop.kv import KV

kv = KV.from_env()
app = App("orders", ready=lambda: None if kv.ping() else "kvstore unreachable", strip_prefix="/api")


@app.post("/orders")
def place_order(req: Request) -> Response:
    body = req.json()
    wanted = {"sku": body.get("sku"), "qty": body.get("qty", 1)}
    status, reserved = call("inventory", "POST", "/reserve", wanted)
    if status != 200:  # 400/404/409: the caller's problem, said by inventory
        raise HTTPError(status, error_of(reserved, "reservation refused"))
    try:
        order = charge_and_record(reserved)
    except Exception:
        release(reserved)
        raise
    if order["status"] == "declined":
        release(reserved)
        return json_response(order, 402)
    return json_response(order, 201)


def charge_and_record(reserved: dict[str, Any]) -> dict[str, Any]:
    order_id = kv.incr("seq:order", 1)
    amount = reserved["qty"] * reserved["price_cents"]
    status, payment = call("payments", "POST", "/charge", {"order_id": order_id, "amount_cents": amount})
    if status != 200:
        raise UpstreamError("payments", error_of(payment, f"answered {status}"))
    order = {
        "id": order_id, "sku": reserved["sku"], "name": reserved["name"], "qty": reserved["qty"],
        "amount_cents": amount, "status": "paid" if payment["status"] == "approved" else "declined",
        "reason": payment.get("reason"), "receipt": payment.get("receipt"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    kv.set(f"order:{order_id:08d}", json.dumps(order))
    return order


def error_of(answer: Any, default: str) -> str:
    return str(answer.get("error", default)) if isinstance(answer, dict) else default


def release(reserved: dict[str, Any]) -> None:
    try:
        call("inventory", "POST", "/release", {"sku": reserved["sku"], "qty": reserved["qty"]})
    except HTTPError as exc:  # best effort: report it, the original error matters more
        log(f"could not release {reserved['qty']} x {reserved['sku']}: {exc}")


@app.get("/orders")
def list_orders(req: Request) -> Response:
    limit = req.query_int("limit", 20)
    keys = kv.keys("order:")
    recent = keys[-limit:] if limit else []
    orders = [json.loads(raw) for key in reversed(recent) if (raw := kv.get(key)) is not None]
    return json_response({"orders": orders, "total": len(keys)})


@app.get("/orders/{id}")
def get_order(req: Request) -> Response:
    if not req.params["id"].isdigit():
        raise HTTPError(404, "order ids are numbers")
    raw = kv.get(f"order:{int(req.params['id']):08d}")
    if raw is None:
        raise HTTPError(404, f"no order {req.params['id']}")
    return json_response(json.loads(raw))


if __name__ == "__main__":
    serve(app)
