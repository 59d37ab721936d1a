"""What OpenAI's GPT-2 sizes cost a reader who runs the chapters with `weights="gpt2"` ... `"gpt2-xl"`.

    python benchmarks/gpt2_sizes.py [--device cpu|cuda] [--sizes gpt2,gpt2-medium] [--json out.json]

Nothing is downloaded: each size is the book's GPT at GPT-2's published configuration with random
weights (the same shapes, hence the same time and memory as the real weights). Per size:
- computed from the parameter count: fp32 weights, and full fine-tuning with AdamW (weights, gradients
  and two Adam moments: 16 bytes per parameter, before activations); a lower bound on the time of one
  million training tokens at the GPU's bf16 peak (6 N FLOPs per token; --peak-tflops, H200/H100: 989);
- measured on this machine: forward latency of one 1 x 128 window (median of --repeats), greedy
  generation with the KV cache (tokens/s, 32 new tokens after 16), and one AdamW training step on
  4 x 128 tokens where the memory estimate fits in --max-train-gb.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gptbook.config import GPT2_SIZES  # noqa: E402
from gptbook.generate import generate  # noqa: E402
from gptbook.model import GPT, GPTConfig, count_params  # noqa: E402

# the published configurations (transformers' GPT2Config for each hub name)
SHAPES = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024),
          "gpt2-large": (36, 20, 1280), "gpt2-xl": (48, 25, 1600)}
GB = 2**30


def timed(fn, device, repeats):
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def measure(name, device, repeats, max_train_gb, peak_tflops):
    L, H, C = SHAPES[name]
    cfg = GPTConfig(n_layer=L, n_head=H, n_embd=C)
    n = count_params(cfg)
    row = {"weights": name, "parameters (M)": round(n / 1e6), "fp32 weights (GiB)": round(4 * n / GB, 2),
           "AdamW fine-tuning states (GiB)": round(16 * n / GB, 1),
           "1M training tokens at GPU peak (s)": round(6 * n * 1e6 / (peak_tflops * 1e12), 2)}
    torch.manual_seed(0)
    with torch.device("meta"):
        model = GPT(cfg)
    model = model.to_empty(device=device)           # random-ish memory is enough for timing
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.eval()
    x = torch.randint(0, cfg.vocab_size, (1, 128), device=device)
    with torch.no_grad():
        model(x)                                      # warm-up
        row["forward 1 x 128 (ms)"] = round(1000 * timed(lambda: model(x), device, repeats), 1)
    prompt = x[:, :16]
    generate(model, prompt, 4, temperature=0.0)
    s = timed(lambda: generate(model, prompt, 32, temperature=0.0), device, repeats)
    row["cached generation (tokens/s)"] = round(32 / s, 1)
    if 16 * n / GB + 2 <= max_train_gb:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        xb = torch.randint(0, cfg.vocab_size, (4, 129), device=device)

        def step():
            loss = model(xb[:, :-1], xb[:, 1:]).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        step()
        row["train step 4 x 128 (s)"] = round(timed(step, device, max(1, repeats // 2)), 2)
    else:
        row["train step 4 x 128 (s)"] = f"not run: needs > {max_train_gb} GiB"
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", default=",".join(GPT2_SIZES), help="comma-separated, of " + ", ".join(GPT2_SIZES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-train-gb", type=float, default=16.0,
                    help="skip the training step where AdamW's states alone would exceed this (GiB)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SHAPES]
    if bad:
        ap.error(f"unknown size(s) {bad}; choose from {', '.join(GPT2_SIZES)}")
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no GPU")
    device = torch.device(a.device)
    rows = []
    for s in sizes:
        rows.append(measure(s, device, a.repeats, a.max_train_gb, a.peak_tflops))
        print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n| " + " | ".join("---" for _ in keys) + " |")
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                            "threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
