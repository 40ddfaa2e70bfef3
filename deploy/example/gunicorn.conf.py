"""gunicorn settings for a memwarden-governed service with several workers.

Each worker runs its own Warden; they share the Prometheus figures through
PROMETHEUS_MULTIPROC_DIR (an emptyDir in Kubernetes). Under that variable the
Warden's sampling loop writes its gauges to files there, and /metrics serves the
sum (livesum) or maximum (livemax) over the live workers.
"""

import os
import shutil

from prometheus_client import multiprocess

bind = "0.0.0.0:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# The uvicorn-worker package; older uvicorn releases ship it as uvicorn.workers.UvicornWorker.
worker_class = "uvicorn_worker.UvicornWorker"
# Give in-flight requests time to finish when Kubernetes drains the pod.
graceful_timeout = 20
timeout = 60


def on_starting(server):
    """Start from an empty metrics directory: files of a previous run would count again."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def child_exit(server, worker):
    """Drop a dead worker's live gauges, so they no longer count in livesum/livemax."""
    multiprocess.mark_process_dead(worker.pid)
