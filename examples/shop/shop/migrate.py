"""migrate: a one-off job that seeds the product catalog into the kvstore.

Idempotent: product names and prices are (re)written on every run, but stock
is only set for products that have none yet, so re-running it (every
`mso up`) never undoes sales.

Keys: `product:<sku>` -> JSON {sku, name, price_cents}; `stock:<sku>` -> int.
"""

from __future__ import annotations

import json
import sys
import time

from shop.kv import KV, KVError

CATALOG = [
    # (sku, name, price in cents, initial stock)
    ("mug", "Orchestrator mug", 1200, 40),
    ("tee", "Canary t-shirt", 2500, 25),
    ("stickers", "Sticker pack", 400, 200),
    ("hoodie", "Blue-green hoodie", 5900, 10),
    ("console", "Rollout console (limited)", 89900, 3),
]


def seed(kv: KV) -> list[str]:
    """Write the catalog; returns the skus whose stock was initialised."""
    initialised = []
    for sku, name, price_cents, stock in CATALOG:
        kv.set(f"product:{sku}", json.dumps({"sku": sku, "name": name, "price_cents": price_cents}))
        if kv.get(f"stock:{sku}") is None:
            kv.set(f"stock:{sku}", str(stock))
            initialised.append(sku)
    return initialised


def main(deadline: float = 10.0) -> int:
    kv = KV.from_env()
    give_up = time.monotonic() + deadline
    while not kv.ping():  # kvstore may have only just opened its port
        if time.monotonic() > give_up:
            print(f"migrate: kvstore at {kv.host}:{kv.port} is unreachable", file=sys.stderr)
            return 1
        time.sleep(0.2)
    try:
        fresh = seed(kv)
    except KVError as exc:
        print(f"migrate: seeding failed: {exc}", file=sys.stderr)
        return 1
    print(f"migrate: {len(CATALOG)} products in the catalog, stock initialised for {fresh or 'none'}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
