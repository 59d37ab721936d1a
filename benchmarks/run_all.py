"""Run every benchmark in turn (`make bench`)."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
rc = 0
for script in ("bench_model.py", "deploy_bench.py", "bench_quality.py", "bench_book.py"):
    if not (HERE / script).exists():
        print(f"skipping {script}: not present")
        continue
    print(f"\n## {script}", flush=True)
    rc |= subprocess.call([sys.executable, str(HERE / script)])
sys.exit(rc)
