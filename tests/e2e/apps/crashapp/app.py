"""A service that cannot start: it says why on stderr and exits 1 (tests of failing fast)."""

import sys

print("api starting", flush=True)
print("fatal: DB_URL is not set", file=sys.stderr, flush=True)
sys.exit(1)
