"""The HTML of the shop's front page, rendered server-side by `shop.web`.

Pure functions from data to markup; every value from a service goes through
`html.escape`. A section whose service failed shows a notice instead of
breaking the whole page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b8c0d0}main{max-width:920px;margin:24px auto;padding:0 16px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin-bottom:20px;box-shadow:0 1px 2px #0001}
h2{font-size:17px;margin:0 0 12px}table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:7px 8px;border-bottom:1px solid #eceef2}th{color:#667;font-weight:600}
td.num,th.num{text-align:right}input[type=number]{width:56px}
button{background:#2f6fed;color:#fff;border:0;border-radius:5px;padding:5px 12px;cursor:pointer}
button:disabled{background:#aab}.badge{padding:2px 8px;border-radius:10px;font-size:13px}
.paid,.ok{background:#dcf5e3;color:#17692f}.declined,.low{background:#fde4e1;color:#99261b}
.notice{padding:10px 14px;border-radius:6px;margin-bottom:16px}
.notice.ok{border:1px solid #9bd3ab}.notice.error{background:#fde4e1;border:1px solid #eeaaa2}
footer{color:#889;font-size:13px;text-align:center;margin:24px}
"""


@dataclass
class PageData:
    title: str
    greeting: str
    currency: str
    served_by: str
    products: list[dict[str, Any]] | None = None  # None: the service failed
    orders: list[dict[str, Any]] | None = None
    payments: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    notice: tuple[str, str] | None = None  # (kind "ok"|"error", text)


def money(cents: int, currency: str) -> str:
    return f"{escape(currency)}{cents / 100:,.2f}"


def products_section(data: PageData) -> str:
    if data.products is None:
        return "<p>The catalog is unavailable right now.</p>"
    rows = []
    for p in data.products:
        sku, stock = escape(p["sku"]), int(p["stock"])
        badge = "low" if stock < 5 else "ok"
        rows.append(
            f"<tr><td>{escape(p['name'])}</td><td class=num>{money(p['price_cents'], data.currency)}</td>"
            f"<td class=num><span class='badge {badge}'>{stock} left</span></td><td class=num>"
            f"<form method=post action=/order><input type=hidden name=sku value='{sku}'>"
            f"<input type=number name=qty value=1 min=1 max=1000> "
            f"<button{' disabled' if stock == 0 else ''}>Buy</button></form></td></tr>")
    return ("<table><tr><th>Product</th><th class=num>Price</th><th class=num>Stock</th><th></th></tr>"
            + "".join(rows) + "</table>") if rows else "<p>No products yet: has the migrate job run?</p>"


def orders_section(data: PageData) -> str:
    if data.orders is None:
        return "<p>Orders are unavailable right now.</p>"
    if not data.orders:
        return "<p>No orders yet. Buy something!</p>"
    rows = "".join(
        f"<tr><td>#{int(o['id'])}</td><td>{int(o['qty'])} &times; {escape(o['name'])}</td>"
        f"<td class=num>{money(o['amount_cents'], data.currency)}</td>"
        f"<td><span class='badge {escape(o['status'])}'>{escape(o['status'])}</span></td>"
        f"<td>{escape(o['created'])}</td></tr>" for o in data.orders)
    return ("<table><tr><th>Order</th><th>Items</th><th class=num>Amount</th><th>Status</th>"
            f"<th>Placed (UTC)</th></tr>{rows}</table>")


def payments_section(data: PageData) -> str:
    if data.payments is None:
        return "<p>Payments are unavailable right now.</p>"
    p = data.payments
    return (f"<p>{int(p['approved'])} approved, {int(p['declined'])} declined, "
            f"{money(p['total_cents'], data.currency)} charged in total. "
            f"Charges over {money(p['limit_cents'], data.currency)} are declined.</p>")


def render(data: PageData) -> str:
    notices = [f"<div class='notice error'>{escape(e)}</div>" for e in data.errors]
    if data.notice:
        notices.insert(0, f"<div class='notice {data.notice[0]}'>{escape(data.notice[1])}</div>")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1">
<title>{escape(data.title)}</title><style>{STYLE}</style></head>
<body><header><h1>{escape(data.title)}</h1><p>{escape(data.greeting)}</p></header><main>
{''.join(notices)}
<section id=products><h2>Products</h2>{products_section(data)}</section>
<section id=orders><h2>Recent orders</h2>{orders_section(data)}</section>
<section id=payments><h2>Payments</h2>{payments_section(data)}</section>
</main><footer>served by {escape(data.served_by)}</footer></body></html>
"""
