"""Test helpers: run the workflow on a config in a temporary directory, small configs."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

torch.set_num_threads(1)


def run_workflow(
    workdir: Path, config: dict | None, *args: str, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with ``config`` written to ``workdir/config.yaml``."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += list(args)
    if config is not None:  # last: --configfile takes every following word as a file
        path = workdir / "test_config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd += ["--configfile", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def make(target: str, *args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    """`make target` (a check CI runs) with this interpreter's snakemake and snakefmt, never rebuilding .venv."""
    cmd = ["make", "-o", ".venv/.installed", target, f"VENV_PYTHON={sys.executable}", f"PLANNING_PYTHON={sys.executable}",
           f"SNAKEMAKE={sys.executable} -m snakemake", f"SNAKEFMT={sys.executable} -m snakefmt", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def small_features_config(models=("identity", "observed"), **experiment) -> dict:
    """A tiny synthetic features experiment for end-to-end tests."""
    return {
        "seed": 0,
        "device": "cpu",
        "datasets": {
            "toy": {
                "source": "synthetic",
                "modality": "features",
                "condition_key": "drug",
                "control": "control",
                "synthetic": {"cells": 300, "perturbations": 2, "features": 12, "seed": 1},
            }
        },
        "experiments": {"toy_iid": {"dataset": "toy", "setting": "iid", "models": list(models), **experiment}},
    }


def small_counts_config(models, **experiment) -> dict:
    """A tiny synthetic scRNA-seq (counts) experiment; latent-space models get a small autoencoder."""
    return {
        "seed": 0,
        "device": "cpu",
        "datasets": {
            "toy_counts": {
                "source": "synthetic",
                "modality": "counts",
                "synthetic": {"cells": 200, "perturbations": 2, "features": 120, "seed": 0},
            }
        },
        "experiments": {
            "counts_iid": {
                "dataset": "toy_counts",
                "setting": "iid",
                "n_hvg": 60,
                "n_markers": 10,
                "autoencoder": {"n_iters": 200, "hidden_units": [32], "latent_dim": 6, "eval_every": 100},
                "models": list(models),
                **experiment,
            }
        },
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


class Server:
    """Serves ``files`` (path -> bytes); paths in ``truncate`` announce more bytes than they send."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.path in server.truncate:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
