"""The mso example shop: web, orders, inventory, payments and a kvstore.

Each service is a module run as `python3 -m shop.<service>`; they share the
server boilerplate in `shop.common` and the kvstore client in `shop.kv`.
"""
