"""inventory: the product catalog and its stock, kept in the kvstore.

    GET  /products            -> {"products": [{sku, name, price_cents, stock}]}
    GET  /products/{sku}      -> one product
    POST /reserve {sku, qty}  -> 200 {sku, name, qty, price_cents, remaining}
                                 404 unknown product, 409 not enough stock
    POST /release {sku, qty}  -> puts reserved stock back (a failed order)

Also served under /api/inventory/... for the gateway route. Ready when the
kvstore answers. The catalog is seeded by the `migrate` job.
"""

from __future__ import annotations

import json
from typing import Any

from shop.common import App, HTTPError, Request, Response, json_response, serve
from shop.kv import KV

kv = KV.from_env()
app = App("inventory", ready=lambda: None if kv.ping() else "kvstore unreachable",
          strip_prefix="/api/inventory")


def product(sku: str) -> dict[str, Any]:
    raw = kv.get(f"product:{sku}")
    if raw is None:
        raise HTTPError(404, f"unknown product {sku!r}")
    item: dict[str, Any] = json.loads(raw)
    item["stock"] = max(0, int(kv.get(f"stock:{sku}") or 0))
    return item


def sku_and_qty(req: Request) -> tuple[str, int]:
    body = req.json()
    sku, qty = body.get("sku"), body.get("qty", 1)
    if not isinstance(sku, str) or not sku:
        raise HTTPError(400, "sku must be a non-empty string")
    if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= 1000:
        raise HTTPError(400, "qty must be an integer from 1 to 1000")
    return sku, qty


@app.get("/products")
def list_products(req: Request) -> Response:
    skus = [key.removeprefix("product:") for key in kv.keys("product:")]
    products = sorted((product(sku) for sku in skus), key=lambda p: str(p["name"]))
    return json_response({"products": products})


@app.get("/products/{sku}")
def get_product(req: Request) -> Response:
    return json_response(product(req.params["sku"]))


@app.post("/reserve")
def reserve(req: Request) -> Response:
    sku, qty = sku_and_qty(req)
    item = product(sku)
    # Take first, check after: INCR is atomic, so two concurrent orders can
    # never both get the last item. Whoever overdraws puts it back.
    remaining = kv.incr(f"stock:{sku}", -qty)
    if remaining < 0:
        kv.incr(f"stock:{sku}", qty)
        available = max(0, remaining + qty)
        raise HTTPError(409, f"only {available} {item['name']} left", available=available)
    return json_response({"sku": sku, "name": item["name"], "qty": qty,
                          "price_cents": item["price_cents"], "remaining": remaining})


@app.post("/release")
def release(req: Request) -> Response:
    sku, qty = sku_and_qty(req)
    product(sku)
    return json_response({"sku": sku, "qty": qty, "remaining": kv.incr(f"stock:{sku}", qty)})


if __name__ == "__main__":
    serve(app)
