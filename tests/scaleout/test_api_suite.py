"""The foundation API suite, unchanged, against PostgreSQL + Redis + S3 (moto).

It runs in a child pytest with ``--backend scaleout``: the shared fixtures of
``tests/conftest.py`` then open every runtime on a fresh PostgreSQL database with the
procrastinate queue, the Redis bus and S3 storage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.scaleout.services import require_postgres, require_redis

ROOT = Path(__file__).resolve().parents[2]
SUITE = [
    "tests/integration/test_generations_api.py",
    "tests/integration/test_seed_routes.py",
    # exact credits, quotas and budgets under concurrency, on PostgreSQL's row locks
    "tests/integration/test_money.py",
    "tests/integration/test_cache.py",
    # the finish that does not read back what it knows, on the set-based UPDATE
    "tests/integration/test_finish_returning.py",
]


def test_foundation_api_suite_passes_on_postgres_redis_and_s3() -> None:
    require_postgres()
    require_redis()
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "--backend",
            "scaleout",
            *SUITE,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
    assert result.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail, tail
