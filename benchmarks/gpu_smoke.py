"""GPU smoke test (`make gpu-smoke`): what the full profile does on one GPU, in under 8 minutes.

    python benchmarks/gpu_smoke.py [--out build/gpu/gpu_smoke.json] [--budget 480]
    python benchmarks/gpu_smoke.py --dry-run      # the same code on the CPU, tiny sizes, no chapter

Records (printed, and written as JSON to --out):
  pre-training   the full profile's GPT trained by the book's own loop (train.train: bf16 autocast,
                 AdamW, clipping) on random token batches of batch_size x block_size; tokens/s
  MFU            tokens/s x FLOPs per token (6 N + 12 n_layer block_size n_embd, the PaLM count)
                 / the GPU's bf16 dense peak, looked up by torch.cuda.get_device_name() in PEAK_TFLOPS;
                 an unknown GPU gets "n/a" rather than a guess
  generation     greedy tokens/s of gptbook.generate with the KV cache, batch 1, fp32 and bf16 autocast
  memory         torch.cuda.max_memory_allocated over training and over generation
  chapter 02     `python -m gptbook run 02 --profile full --output-dir build/gpu`: wall seconds and
                 whether it passed, within what is left of --budget seconds
Without CUDA it says so in one line and exits with code 2 (--dry-run runs the measuring code on the
CPU instead, with tiny sizes, and skips the chapter).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from gptbook import config, train  # noqa: E402
from gptbook.generate import generate  # noqa: E402
from gptbook.model import GPT  # noqa: E402

# bf16 dense peak (no sparsity), TFLOPS, by a name torch.cuda.get_device_name() contains.
# H100 SXM and H200: 989; A100: 312. Other GPUs report MFU as n/a.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
DRY_RUN_SIZES = dict(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=32, batch_size=4)


def peak_tflops(device_name: str):
    """The bf16 dense peak of a GPU by its name, or None when the table does not know it."""
    hits = [v for k, v in PEAK_TFLOPS.items() if k.lower() in device_name.lower()]
    return hits[0] if hits else None


def flops_per_token(model: GPT) -> int:
    """Training FLOPs per token: 6 N (forward + backward of every weight) + 12 L T C (attention)."""
    c = model.config
    return 6 * model.num_params() + 12 * c.n_layer * c.block_size * c.n_embd


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(device: torch.device):
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else None


def reset_peak(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def measure_training(cfg, device: torch.device, steps: int, warmup: int) -> tuple:
    """(model, results): the full profile's GPT trained `warmup` then `steps` steps by train.train."""
    model = GPT(cfg.model_config()).to(device)
    g = torch.Generator().manual_seed(cfg.seed)

    def batch(dev):
        x = torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.block_size + 1), generator=g).to(dev)
        return x[:, :-1], x[:, 1:]
    train.train(model, batch, cfg, max_steps=warmup, progress=False)      # kernels chosen, memory settled
    reset_peak(device)
    t0 = time.perf_counter()
    hist = train.train(model, batch, cfg, max_steps=steps, progress=False)
    sync(device)
    seconds = time.perf_counter() - t0
    tok_s = hist.tokens_seen / seconds
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = peak_tflops(name) if device.type == "cuda" else None
    mfu = tok_s * flops_per_token(model) / (peak * 1e12) if peak else None
    dtype = cfg.dtype if device.type == "cuda" else "float32"   # train.autocast is for GPUs only
    return model, {"device_name": name, "parameters": model.num_params(), "dtype": dtype,
                   "batch": [cfg.batch_size, cfg.block_size], "train_steps": steps,
                   "train_tokens_per_s": tok_s, "flops_per_token": flops_per_token(model),
                   "peak_tflops_bf16": peak, "mfu": mfu, "train_peak_bytes": peak_bytes(device),
                   "final_train_loss": hist.train_loss[-1]}


@torch.no_grad()
def measure_generation(model: GPT, device: torch.device, repeat: int = 3) -> dict:
    """Greedy cached generation, batch 1: a 16-token prompt filled to the context."""
    model.eval()
    T = model.config.block_size
    prompt = torch.randint(model.config.vocab_size, (1, min(16, T // 2)), generator=torch.Generator().manual_seed(0))
    prompt = prompt.to(device)
    new = T - prompt.size(1)
    out = {}
    reset_peak(device)
    for dtype in ("float32", "bfloat16"):
        best = float("inf")
        for i in range(repeat + 1):   # the first is a warm-up
            sync(device)
            t0 = time.perf_counter()
            with train.autocast(device, dtype):
                generate(model, prompt, new, temperature=0.0, use_cache=True)
            sync(device)
            if i:
                best = min(best, time.perf_counter() - t0)
        out[f"generate_tokens_per_s_{dtype}"] = new / best
    out["generate_new_tokens"] = new
    out["generate_peak_bytes"] = peak_bytes(device)
    return out


def run_chapter(seconds_left: float) -> dict:
    """Chapter 02 in the full profile, as a reader runs it; stopped when the budget is spent."""
    cmd = [sys.executable, "-m", "gptbook", "run", "02", "--profile", "full", "--output-dir", "build/gpu"]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, seconds_left))
        ok, tail = p.returncode == 0, (p.stdout + p.stderr).strip().splitlines()[-3:]
        status = "passed" if ok else f"failed (exit code {p.returncode})"
    except subprocess.TimeoutExpired:
        ok, tail, status = False, [], f"timed out after {seconds_left:.0f} s (the smoke test's budget)"
    return {"chapter_02_full": status, "chapter_02_ok": ok, "chapter_02_seconds": time.perf_counter() - t0,
            "chapter_02_command": " ".join(cmd[1:]), "chapter_02_tail": tail}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "gpu" / "gpu_smoke.json"))
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480 = 8 min)")
    ap.add_argument("--steps", type=int, default=None, help="measured training steps (default 50; dry run 3)")
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU needed: the measuring code on the CPU with tiny sizes, no chapter")
    ap.add_argument("--skip-chapter", action="store_true", help="leave out chapter 02")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    if not a.dry_run and not torch.cuda.is_available():
        print(f"gpu-smoke: no CUDA GPU visible (torch {torch.__version__}, torch.cuda.is_available() is False); "
              f"run it on a machine with an NVIDIA GPU, or pass --dry-run to check the code on the CPU",
              file=sys.stderr)
        return 2
    if a.dry_run:
        cfg = config.setup("full", device="cpu", max_steps=3, warmup_steps=1, **DRY_RUN_SIZES)
        device, steps, warmup = torch.device("cpu"), a.steps or 3, 1
    else:
        cfg = config.setup("full")
        device, steps, warmup = torch.device("cuda"), a.steps or 50, 5
    res = {"benchmark": "gpu-smoke", "dry_run": a.dry_run, "torch": torch.__version__,
           "cuda": torch.version.cuda, "profile": "full" + (" (dry-run sizes)" if a.dry_run else "")}
    model, r = measure_training(cfg, device, steps, warmup)
    res.update(r)
    res.update(measure_generation(model, device))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if a.dry_run or a.skip_chapter:
        res["chapter_02_full"] = "skipped" + (" (dry run)" if a.dry_run else "")
    else:
        res.update(run_chapter(a.budget - (time.perf_counter() - t_start)))
    res["seconds"] = time.perf_counter() - t_start
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    mb = lambda b: "n/a" if b is None else f"{b / 2**20:,.0f} MiB"   # noqa: E731
    print(f"device                 {res['device_name']} (torch {res['torch']}, CUDA {res['cuda']})")
    print(f"pre-training           {res['train_tokens_per_s']:,.0f} tokens/s ({res['dtype']}, batch "
          f"{res['batch'][0]} x {res['batch'][1]}, {res['parameters']:,} parameters)")
    print("MFU                    " + ("n/a (GPU not in PEAK_TFLOPS)" if res["mfu"] is None else
                                        f"{res['mfu']:.1%} of {res['peak_tflops_bf16']:.0f} TFLOPS bf16"))
    print(f"cached generation      {res['generate_tokens_per_s_float32']:,.0f} tokens/s fp32, "
          f"{res['generate_tokens_per_s_bfloat16']:,.0f} bf16 (batch 1)")
    print(f"peak memory            training {mb(res['train_peak_bytes'])}, generation {mb(res['generate_peak_bytes'])}")
    print(f"chapter 02 (full)      {res['chapter_02_full']}")
    print(f"written to {out} ({res['seconds']:.0f} s)")
    return 0 if res.get("chapter_02_ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
