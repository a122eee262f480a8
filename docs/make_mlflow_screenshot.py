"""Screenshot the MLflow UI comparing the latest run of each model family (for docs/mlflow.md).

Starts ``mlflow ui`` on 127.0.0.1 against a tracking store, opens its run-comparison page for
the latest finished parent run of every family in one experiment (see
:func:`monai_mammo.engines.comparison.latest_runs`) in headless Chromium (Debian's ``chromium``
package: ``apt-get install chromium``), saves a PNG and stops the server.

Usage::

    python docs/make_mlflow_screenshot.py --experiment synthetic-cbis-ddsm \
        --tracking-uri sqlite:///$HOME/.monai_mammo/mlflow/mlflow.db --out docs/images/mlflow_compare.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from monai_mammo.engines.comparison import latest_runs
from monai_mammo.engines.tracking import default_tracking_uri


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                return
        except OSError:
            pass
        if server.poll() is not None:
            break
        time.sleep(1)
    raise RuntimeError(f"mlflow ui did not start at {url}")


def compare_url(base: str, run_ids: list[str], experiment_ids: list[str]) -> str:
    """The MLflow UI page comparing ``run_ids``."""
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps(experiment_ids)})
    return f"{base}/#/compare-runs?{query}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="store (default: the project's store)")
    parser.add_argument("--experiment", required=True, help="experiment holding the runs to compare")
    parser.add_argument("--out", type=Path, default=Path("docs/images/mlflow_compare.png"))
    parser.add_argument("--size", default="1600,1100", help="window width,height in pixels")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time the page gets to render")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found: apt-get install chromium", file=sys.stderr)
        return 1
    uri = args.tracking_uri or default_tracking_uri()
    runs = latest_runs(uri, experiment=args.experiment)
    if len({r.family for r in runs}) < 2:
        print(f"need finished runs of two families in {args.experiment!r}, found {[r.family for r in runs]}")
        return 1
    experiment_id = runs[0].tags.get("mlflow.experimentId") or _experiment_id(uri, args.experiment)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(base, server)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [
                    chromium,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--user-data-dir={profile}",
                    f"--window-size={args.size}",
                    f"--virtual-time-budget={args.wait_ms}",
                    f"--screenshot={args.out.resolve()}",
                    compare_url(base, [r.run_id for r in runs], [experiment_id]),
                ],
                check=True,
                capture_output=True,
                timeout=300,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out} comparing {', '.join(f'{r.family} ({r.run_name})' for r in runs)}")
    return 0


def _experiment_id(uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment else "0"


if __name__ == "__main__":
    sys.exit(main())
