"""web: the shop's front end.

    GET  /              the shop page, built from inventory, orders and payments
    POST /order         the page's Buy form (sku, qty): places the order, then
                        redirects back to / with the outcome
    GET  /api/payments  payments' JSON, proxied (the gateway routes only
                        /api/orders and /api/inventory to their services)

Reaches the other services only through ORDERS_URL, INVENTORY_URL and
PAYMENTS_URL. A failing service blanks its own section, not the page.
Settings: GREETING from the environment, the title and currency from
conf/web.toml (delivered by mso at $MSO_CONFIG_DIR/conf/web.toml).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from shop.common import App, HTTPError, Request, Response, call, html_response, json_response, log, redirect, serve
from shop.page import PageData, render

app = App("web")
CONFIG: dict[str, Any] = {}


def load_config() -> dict[str, Any]:
    """The [shop] table of conf/web.toml; defaults when it is missing."""
    path = Path(os.environ.get("MSO_CONFIG_DIR", "."), "conf", "web.toml")
    try:
        with path.open("rb") as f:
            shop: dict[str, Any] = tomllib.load(f).get("shop", {})
            return shop
    except (OSError, tomllib.TOMLDecodeError) as exc:
        log(f"config {path} not usable ({exc}), using defaults")
        return {}


def fetch(data: PageData, service: str, path: str) -> Any:
    """A dependency's JSON, or None after noting the failure on the page."""
    try:
        status, body = call(service, "GET", path)
    except HTTPError as exc:
        data.errors.append(str(exc))
        return None
    if status != 200:
        data.errors.append(f"{service} answered {status}")
        return None
    return body


@app.get("/")
def home(req: Request) -> Response:
    replica = os.environ.get("MSO_REPLICA", "web")
    release = os.environ.get("MSO_RELEASE")
    data = PageData(
        title=str(CONFIG.get("title", "mso demo shop")),
        greeting=os.environ.get("GREETING", "Welcome to the mso shop"),
        currency=str(CONFIG.get("currency", "$")),
        served_by=f"{replica}, release {release}" if release else replica,
    )
    if "placed" in req.query:
        data.notice = ("ok", f"Order #{req.query['placed']} is paid. Thank you!")
    elif "failed" in req.query:
        data.notice = ("error", f"Your order did not go through: {req.query['failed']}")
    products = fetch(data, "inventory", "/products")
    orders = fetch(data, "orders", f"/orders?limit={int(CONFIG.get('recent_orders', 8))}")
    data.products = products and products["products"]
    data.orders = orders and orders["orders"]
    data.payments = fetch(data, "payments", "/payments?limit=0")
    return html_response(render(data))


@app.post("/order")
def order(req: Request) -> Response:
    form = dict(parse_qsl(req.body.decode(errors="replace")))
    qty = int(form["qty"]) if form.get("qty", "").isdigit() else 0
    try:
        # orders calls inventory and payments in turn: give it time for both
        status, body = call("orders", "POST", "/orders", {"sku": form.get("sku", ""), "qty": qty}, timeout=6.0)
    except HTTPError as exc:
        return redirect("/?" + urlencode({"failed": str(exc)}))
    if status == 201:
        return redirect("/?" + urlencode({"placed": body["id"]}))
    reason = body.get("reason") or body.get("error") if isinstance(body, dict) else None
    return redirect("/?" + urlencode({"failed": reason or f"orders answered {status}"}))


@app.get("/api/payments")
def payments_api(req: Request) -> Response:
    status, body = call("payments", "GET", f"/payments?limit={req.query_int('limit', 20)}")
    return json_response(body, status)


if __name__ == "__main__":
    CONFIG = load_config()
    serve(app)
