"""An example web service governed by memwarden, as deploy/kubernetes/memwarden.yaml runs it.

memwarden's HTTP app is mounted at /memwarden: /memwarden/readyz for the
readiness probe, /memwarden/healthz for liveness, /memwarden/metrics for
Prometheus and /memwarden/ for the dashboard. Run it with gunicorn and the
settings in gunicorn.conf.py (several workers share the Prometheus figures
through PROMETHEUS_MULTIPROC_DIR), or alone with
``uvicorn service:app --port 8000``.
"""

from __future__ import annotations

from fastapi import FastAPI

from memwarden import Warden
from memwarden.asgi import MemoryGuardMiddleware, lifespan
from memwarden.http import create_app

# One Warden per worker process, configured from the environment (MEMWARDEN_*),
# running for the app's lifetime.
warden = Warden()
app = FastAPI(lifespan=lifespan(warden))
# At CRITICAL pressure new requests get 503 + Retry-After instead of an OOM kill;
# memwarden's own routes (mounted below) stay reachable.
app.add_middleware(MemoryGuardMiddleware, warden=warden, exempt=("/memwarden/",))
# The token (MEMWARDEN_API_TOKEN) guards the API; Prometheus scrapes /metrics without it.
app.mount("/memwarden", create_app(warden, metrics_auth=False))


@app.get("/work")
async def work() -> dict[str, int]:
    # A request that needs 8 MiB for a while waits for room instead of risking the limit.
    async with warden.manager.reserve(8 << 20):
        return {"reserved": 8 << 20}
