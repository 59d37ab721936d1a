"""Training and generation speed: the book's GPT against transformers.GPT2LMHeadModel, same run.

    python benchmarks/bench_model.py [--device cpu|cuda] [--repeats 3] [--json out.json]
                                     [--nanogpt DIR] [--fused] [--compile]

With --nanogpt DIR (a checkout of github.com/karpathy/nanoGPT, or any folder holding its model.py;
nothing of it is shipped here) nanoGPT's model joins the training comparison, with the same weights.
With --fused the book's model is also timed with AdamW(fused=True) (a separate column), to decide
whether the trainer should use it. With --compile the book's model is also timed under
torch.compile (inductor; the compilation happens in the untimed warm-up steps and is reported apart).

Both models get the same configuration (the one of ../shared/baseline.md: 4 layers, 4 heads,
256 wide, context 256, vocab 8192, dropout 0) and the same weights (converted with gptbook.hf).
Measurements alternate between the two models so that machine noise hits both alike; the table
reports medians and the ratio book / HF. On CUDA, bf16 autocast and the model FLOPs utilisation
(6 N tokens/s + attention, against the GPU's bf16 peak given by --peak-tflops) are reported too.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from gptbook.generate import generate  # noqa: E402
from gptbook.hf import to_hf  # noqa: E402
from gptbook.model import GPT, GPTConfig  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_tokens_per_s(model, batch, device, steps, dtype, fused=False):
    """forward + backward + AdamW; returns tokens/s over `steps` timed steps (after 2 warm-up)."""
    model.train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
    x = torch.randint(0, 8192, batch, device=device)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast("cpu", enabled=False)
    for i in range(steps + 2):
        if i == 2:
            sync(device)
            t0 = time.perf_counter()
        with ctx:
            if isinstance(getattr(model, "_orig_mod", model), GPT):     # the book's, compiled or not
                loss = model(x, x).loss
            elif hasattr(model, "generation_config"):        # transformers
                loss = model(x, labels=x).loss
            else:                                            # nanoGPT returns (logits, loss)
                loss = model(x, x)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return steps * x.numel() / (time.perf_counter() - t0)


@torch.no_grad()
def book_generate(model, prompt, new, use_cache):
    return generate(model, prompt, new, temperature=0, use_cache=use_cache)


@torch.no_grad()
def hf_generate(model, prompt, new, use_cache):
    return model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                          use_cache=use_cache, pad_token_id=0)


def gen_tokens_per_s(fn, model, prompt, new, use_cache, device):
    model.eval().to(device)
    sync(device)
    t0 = time.perf_counter()
    out = fn(model, prompt, new, use_cache)
    sync(device)
    return new / (time.perf_counter() - t0), out


def load_nanogpt(folder, book):
    """nanoGPT's GPT from `folder`/model.py with the book model's configuration and weights (the module
    names are GPT-2's in both, so the state_dict loads as is; nanoGPT keeps no attention-bias buffer
    when it uses SDPA)."""
    import importlib.util
    from pathlib import Path
    path = Path(folder) / "model.py"
    if not path.is_file():
        raise SystemExit(f"--nanogpt: no model.py in {folder} (give a checkout of karpathy/nanoGPT)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = book.config
    ng = mod.GPT(mod.GPTConfig(block_size=c.block_size, vocab_size=c.vocab_size, n_layer=c.n_layer,
                               n_head=c.n_head, n_embd=c.n_embd, dropout=0.0, bias=True))
    missing, unexpected = ng.load_state_dict(book.state_dict(), strict=False)
    assert not missing, f"nanoGPT expects weights the book's model lacks: {missing}"
    return ng


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 dense peak (H100 SXM: 989)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--nanogpt", metavar="DIR", help="a nanoGPT checkout: its model joins the training comparison")
    ap.add_argument("--fused", action="store_true", help="also time the book's model with AdamW(fused=True)")
    ap.add_argument("--compile", action="store_true", help="also time the book's model under torch.compile")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 2) if a.device == "cpu" else torch.get_num_threads())
    dtype = "bf16" if device.type == "cuda" else "fp32"
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=8192, block_size=512, n_layer=4, n_head=4, n_embd=256, dropout=0.0)
    book = GPT(cfg)
    hf = to_hf(book)
    hf.config._attn_implementation = "sdpa"
    n_params = book.num_params()
    ng = load_nanogpt(a.nanogpt, book) if a.nanogpt else None
    # --- training throughput, alternating
    tb, th, tn, tf, tc = [], [], [], [], []
    compiled, compile_s = None, None
    if a.compile:
        same_weights = GPT(cfg)
        same_weights.load_state_dict(book.state_dict())
        compiled = torch.compile(same_weights)
        t0 = time.perf_counter()
        train_tokens_per_s(compiled, (a.batch, 256), device, 1, dtype)    # compiles forward and backward
        compile_s = time.perf_counter() - t0
    for _ in range(a.repeats):
        tb.append(train_tokens_per_s(book, (a.batch, 256), device, a.train_steps, dtype))
        th.append(train_tokens_per_s(hf, (a.batch, 256), device, a.train_steps, dtype))
        if ng is not None:
            tn.append(train_tokens_per_s(ng, (a.batch, 256), device, a.train_steps, dtype))
        if a.fused:
            tf.append(train_tokens_per_s(book, (a.batch, 256), device, a.train_steps, dtype, fused=True))
        if compiled is not None:
            tc.append(train_tokens_per_s(compiled, (a.batch, 256), device, a.train_steps, dtype))
    # --- generation: 16-token prompt, greedy, new tokens, with and without cache
    torch.manual_seed(0)
    book, hf = GPT(cfg), None
    hf = to_hf(book)
    prompt = torch.randint(0, 8192, (1, 16), device=device)
    g = {k: [] for k in ("book_cache", "book_nocache", "hf_cache", "hf_nocache")}
    same = True
    for _ in range(a.repeats):
        r1, o1 = gen_tokens_per_s(book_generate, book, prompt, a.new_tokens, True, device)
        r2, o2 = gen_tokens_per_s(book_generate, book, prompt, a.new_tokens, False, device)
        r3, o3 = gen_tokens_per_s(hf_generate, hf, prompt, a.new_tokens, True, device)
        r4, _ = gen_tokens_per_s(hf_generate, hf, prompt, a.new_tokens, False, device)
        same &= torch.equal(o1, o2) and torch.equal(o1, o3)
        for k, v in zip(g, (r1, r2, r3, r4)):
            g[k].append(v)
    med = {k: statistics.median(v) for k, v in g.items()}
    res = {
        "bench": "model", "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": __import__("transformers").__version__, "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"), "params": n_params, "dtype": dtype,
        "train_tok_s_book": statistics.median(tb), "train_tok_s_hf": statistics.median(th),
        "train_ratio_book_over_hf": statistics.median(tb) / statistics.median(th),
        "gen_tok_s": med, "kv_cache_speedup_book": med["book_cache"] / med["book_nocache"],
        "gen_ratio_book_over_hf_cached": med["book_cache"] / med["hf_cache"],
        "greedy_tokens_identical_book_cache_nocache_hf": bool(same),
    }
    if tn:
        res["train_tok_s_nanogpt"] = statistics.median(tn)
        res["train_ratio_book_over_nanogpt"] = statistics.median(tb) / statistics.median(tn)
    if tf:
        res["train_tok_s_book_fused_adamw"] = statistics.median(tf)
        res["train_ratio_fused_over_plain"] = statistics.median(tf) / statistics.median(tb)
    if tc:
        res["train_tok_s_book_compiled"] = statistics.median(tc)
        res["train_ratio_compiled_over_eager"] = statistics.median(tc) / statistics.median(tb)
        res["compile_seconds"] = compile_s
    if device.type == "cuda":
        # 6 N per token for forward+backward, plus attention 12 * L * T * C
        flops_per_tok = 6 * n_params + 12 * cfg.n_layer * 256 * cfg.n_embd
        res["mfu_book"] = res["train_tok_s_book"] * flops_per_tok / (a.peak_tflops * 1e12)
    print("| what | book GPT | HF GPT2LMHeadModel | book / HF |\n|---|---|---|---|")
    print(f"| training tokens/s (fwd+bwd+AdamW, batch {a.batch}x256, {dtype}) | {res['train_tok_s_book']:,.0f} | "
          f"{res['train_tok_s_hf']:,.0f} | {res['train_ratio_book_over_hf']:.2f} |")
    print(f"| greedy generation tokens/s, 16 + {a.new_tokens}, KV cache | {med['book_cache']:,.0f} | "
          f"{med['hf_cache']:,.0f} | {res['gen_ratio_book_over_hf_cached']:.2f} |")
    print(f"| greedy generation tokens/s, no cache | {med['book_nocache']:,.0f} | {med['hf_nocache']:,.0f} | "
          f"{med['book_nocache'] / med['hf_nocache']:.2f} |")
    if tn:
        print(f"| training tokens/s, nanoGPT's model (same weights) | {res['train_tok_s_nanogpt']:,.0f} | | "
              f"book / nanoGPT {res['train_ratio_book_over_nanogpt']:.2f} |")
    if tf:
        print(f"| training tokens/s, book GPT with AdamW(fused=True) | {res['train_tok_s_book_fused_adamw']:,.0f} | | "
              f"fused / plain {res['train_ratio_fused_over_plain']:.2f} |")
    if tc:
        print(f"| training tokens/s, book GPT under torch.compile | {res['train_tok_s_book_compiled']:,.0f} | | "
              f"compiled / eager {res['train_ratio_compiled_over_eager']:.2f} (compiling: {compile_s:.0f} s) |")
    print(f"KV-cache speed-up (book): {res['kv_cache_speedup_book']:.1f}x; greedy tokens identical "
          f"(book cached / uncached / HF): {same}")
    print(json.dumps(res))
    if a.json:
        open(a.json, "w").write(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
