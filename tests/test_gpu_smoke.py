"""benchmarks/gpu_smoke.py without a GPU: the one-line refusal, and its measuring code on the CPU."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_smoke.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_cuda_it_says_so_in_one_line_and_exits_2():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}   # no GPU visible, even on a machine that has one
    p = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-smoke: no CUDA GPU visible") and "--dry-run" in lines[0]
    assert p.stdout == ""


def test_peak_table_and_flop_count():
    mod = _module()
    assert mod.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert mod.peak_tflops("NVIDIA H200") == 989.0
    assert mod.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert mod.peak_tflops("NVIDIA GeForce RTX 4090") is None          # unknown: MFU n/a, not a guess
    from gptbook.model import GPT, GPTConfig
    m = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    assert mod.flops_per_token(m) == 6 * m.num_params() + 12 * 2 * 16 * 32


@pytest.mark.slow
def test_dry_run_measures_on_the_cpu(tmp_path, monkeypatch):
    mod = _module()
    threads = torch.get_num_threads()
    out = tmp_path / "smoke.json"
    try:
        assert mod.main(["--dry-run", "--out", str(out), "--steps", "2"]) == 0
    finally:
        torch.set_num_threads(threads)
    r = json.loads(out.read_text())
    assert r["dry_run"] and r["device_name"] == "cpu" and r["mfu"] is None
    assert r["train_tokens_per_s"] > 0 and r["train_steps"] == 2
    assert r["generate_tokens_per_s_float32"] > 0 and r["generate_tokens_per_s_bfloat16"] > 0
    assert r["chapter_02_full"] == "skipped (dry run)" and r["train_peak_bytes"] is None
