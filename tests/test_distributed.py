"""Data-parallel training: the book's loop under `torchrun` with 2 CPU workers (gloo) follows the
one-process run at the same global batch, and only rank 0 writes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptbook import data, train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# Two workers sum their half-batch gradients in another order than one process sums the whole batch,
# so the runs differ by float rounding only. Measured on 2 CPU cores (torch 2.13.0, ddp_worker.py,
# 20 steps, seeds 0, 1, 2): train and validation losses at most 4.8e-7 apart, weights at most 1.6e-5
# (AdamW divides by the gradient's running RMS, which enlarges rounding where a gradient is near 0).
# The tolerances are 10x those, far below a real difference (one step moves the loss by ~0.05).
LOSS_ATOL, WEIGHT_ATOL = 5e-6, 2e-4


def run(cmd, cwd, **env):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTBOOK_NO_PROGRESS": "1", **env}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def assert_same_run(one: dict, two: dict):
    for key in ("train_loss", "val_loss"):
        a, b = torch.tensor(one["history"][key]), torch.tensor(two["history"][key])
        assert len(a) == len(b) > 1
        torch.testing.assert_close(b, a, rtol=0, atol=LOSS_ATOL, msg=key)
    assert two["history"]["lr"] == one["history"]["lr"]
    assert two["history"]["tokens_seen"] == one["history"]["tokens_seen"]   # tokens of the global batches


@pytest.mark.slow
def test_data_parallel_follows_one_process(tmp_path):
    """ddp_worker.py has no distributed code: train() joins the workers and save_checkpoint writes on
    rank 0 only. Same seeds -> the same global batches, each worker computing half of every one."""
    worker = str(Path(__file__).with_name("ddp_worker.py"))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    run([sys.executable, worker, str(tmp_path / "one" / "ck.pt")], tmp_path / "one")
    run(TORCHRUN + [worker, str(tmp_path / "two" / "ck.pt")], tmp_path / "two")
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["ck.pt"]     # rank 1 wrote nothing
    m1, one = train.load_checkpoint(tmp_path / "one" / "ck.pt")
    m2, two = train.load_checkpoint(tmp_path / "two" / "ck.pt")
    assert (one["world"], two["world"]) == (1, 2)
    assert_same_run(one, two)
    loss = one["history"]["train_loss"]
    assert len(loss) == 20 and loss[-1] < loss[0] - 1.0                    # it learns
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=WEIGHT_ATOL, msg=k)
    assert two["rows"] * 2 == one["rows"] == 20 * 8                         # each worker: half of each batch


@pytest.mark.slow
def test_pretrain_cli_under_torchrun(tmp_path):
    """`torchrun ... -m gptbook pretrain` on the real corpus (20,000 characters, a tiny GPT): the
    one-process curve, one checkpoint, one summary line. The cache is a fresh folder that borrows the
    data bundle, so the tiny tokenizer it trains lands there, not in the reader's cache."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data").symlink_to(data.cache_dir() / "data", target_is_directory=True)
    settings = [f"--set={kv}" for kv in ("corpus_chars=20000", "vocab_size=300", "n_layer=1", "n_head=2",
                                         "n_embd=32", "block_size=16", "batch_size=4", "max_steps=4",
                                         "eval_interval=2", "eval_iters=1", "threads=1", "device=cpu")]
    out = {}
    for name, launch in (("one", [sys.executable]), ("two", TORCHRUN)):
        (tmp_path / name).mkdir()
        out[name] = run(launch + ["-m", "gptbook", "pretrain", *settings, "--out", str(tmp_path / name / "ck.pt")],
                        tmp_path / name, GPTBOOK_CACHE=str(cache))
    assert out["two"].count("saved") == 1 and out["two"].startswith("2 worker(s), 4 steps")
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["ck.pt"]
    assert not (cache / "models").exists()                                  # --out, not the model cache
    assert_same_run(train.load_checkpoint(tmp_path / "one" / "ck.pt")[1],
                    train.load_checkpoint(tmp_path / "two" / "ck.pt")[1])


def test_one_process_is_rank_0_of_1(monkeypatch, tmp_path, tiny_model):
    """Without torchrun nothing is joined; with torchrun's variables set (before joining or after
    leaving) a worker knows its rank, and save_checkpoint writes on rank 0 only."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert train.distributed() == (0, 1) and train.join_workers("cpu") is False
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train.distributed() == (1, 2)
    train.save_checkpoint(tiny_model, tmp_path / "ck.pt")
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("RANK", "0")
    train.save_checkpoint(tiny_model, tmp_path / "ck.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
