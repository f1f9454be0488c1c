"""/metrics sums every gunicorn worker's counts (prometheus_client multiprocess mode)."""

import os
import subprocess
import sys

COUNT_REQUESTS = """
from easysmart.metrics import HTTP_REQUESTS
for _ in range(3):
    HTTP_REQUESTS.labels(function="ingest", route="upload", status="201").inc()
"""
SCRAPE = """
from easysmart.observability import metrics_response
print(metrics_response()[0].decode())
"""


def run(code: str, metrics_dir) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout


def test_a_scrape_sums_the_counts_of_every_worker_process(tmp_path):
    metrics_dir = tmp_path / "metrics"  # made by the first process that counts
    run(COUNT_REQUESTS, metrics_dir)
    run(COUNT_REQUESTS, metrics_dir)
    scraped = run(SCRAPE, metrics_dir)
    assert 'esm_http_requests_total{function="ingest",route="upload",status="201"} 6.0' in scraped
