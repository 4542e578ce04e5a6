"""Prometheus for the conformance scenarios on Swarm and Kubernetes (a `run:` service).

Writes `prometheus-run.yml` from `prometheus.yml` with the targets of `$SCRAPE`
(`name:port,...`), each name replaced by `$NAME_SERVICE_HOST` when the pod has it
(Kubernetes' service variables: the lab cluster has no DNS) and kept otherwise (Swarm's
overlay network resolves it), then becomes Debian's Prometheus copied beside it.
"""

import json
import os

targets = []
for target in os.environ["SCRAPE"].split(","):
    name, port = target.rsplit(":", 1)
    host = os.environ.get(name.upper().replace("-", "_") + "_SERVICE_HOST", name)
    targets.append(f"{host}:{port}")
with open("prometheus.yml") as src, open("prometheus-run.yml", "w") as out:
    out.write(src.read().replace("TARGETS", json.dumps(targets)))
print(f"prom: scraping {targets}", flush=True)
os.execv("./prometheus", ["prometheus", "--config.file=prometheus-run.yml",
                          "--storage.tsdb.path=data", "--web.listen-address=0.0.0.0:9090",
                          "--log.level=warn"])
