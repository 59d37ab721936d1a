"""Chapter 05's claims as ratios, measured in one run on the book's pre-trained model.

    python benchmarks/deploy_bench.py [--profile quick] [--repeat 5] [--threads N] [--untrained]

Part 1, the chapter's techniques: KV cache, batching, bf16, int8, pruning, ONNX (ratios as before).
Part 2, the deployment paths side by side, each against PyTorch fp32 (eager) on the same model:
  PyTorch int8 (gptbook.deploy.quantize, the hand-written lesson), PyTorch int8 (torchao),
  ONNX Runtime fp32 and int8 (onnxruntime.quantization.quantize_dynamic), the ONNX ones exported
  with their KV cache (gptbook.deploy.onnx.OnnxGPT). For each: forward latency / fp32 at batch
  8 x min(256, block_size) and at 1 x 16, artefact size (fp32 state_dict / artefact bytes: "x
  smaller"), held-out perplexity change, cached greedy generation tokens/s / PyTorch's, and whether
  the greedy tokens equal PyTorch's (else the share of positions that agree).
--untrained measures part 2's speed and sizes on a freshly initialised model of the profile's size
(no pre-training needed: `--profile full --untrained` gives the 8 x 256 shape); quality is skipped.

Prints tables, then one JSON line (for CI logs / comparing machines). Latency ratios < 1 mean
faster; all variants are timed in turn (A, B, C, A, B, C, ...) so the machine's load hits them alike.
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from gptbook import config, train  # noqa: E402
from gptbook.deploy import bench, onnx, prune, quantize  # noqa: E402
from gptbook.generate import generate  # noqa: E402
from gptbook.model import GPT  # noqa: E402

BASE = "PyTorch fp32"


def measure_techniques(cfg, model, tok, val, repeat: int = 5) -> dict:
    """Part 1: every ratio of chapter 05's technique sections. model: the book's GPT (CPU, eval)."""
    T = cfg.block_size
    x = val[:8 * T].view(8, T)                       # one batch of held-out windows
    ppl = lambda m, **kw: bench.perplexity(m, val, T, **kw)     # noqa: E731
    r = {}
    with torch.no_grad():
        prompt = val[:16][None]
        new = T - 16
        r["kv_cache_speedup"] = (bench.generation_seconds(model, prompt, new, False, repeat=3)
                                 / bench.generation_seconds(model, prompt, new, True, repeat=3))
        prompts = [val[i * 37:i * 37 + 4 + i % 9].tolist() for i in range(16)]
        tps = bench.batch_throughput(model, prompts, 16, [1, 16], pad_id=tok.token_to_id("<|pad|>"))
        r["batch16_throughput_ratio"] = tps[1] / tps[0]
        p50 = prune.global_magnitude_prune(model, 0.5)
        p32 = ppl(model)
        r["bf16_ppl_change"] = ppl(model, dtype="bfloat16") / p32 - 1
        r["prune50_ppl_change"] = ppl(p50) / p32 - 1

        def bf16():
            with bench.autocast("cpu", "bfloat16"):
                model(x)
        t = bench.compare_seconds({"fp32": lambda: model(x), "bf16": bf16, "prune50": lambda: p50(x)}, repeat)
        for k in ("bf16", "prune50"):
            r[f"{k}_latency_ratio"] = t[k] / t["fp32"]
    r["fp32_perplexity"] = p32
    return r


def deployment_paths(model, directory, threads: int = 0) -> tuple:
    """({name: model-like}, {name: artefact bytes}) for PyTorch fp32 and the four int8 / ONNX paths."""
    d = Path(directory)
    fp32_onnx = onnx.export(model, d / "gpt-kv.onnx", cache=True)
    int8_onnx = onnx.quantize_int8(fp32_onnx, d / "gpt-kv-int8.onnx")
    paths = {BASE: model,
             "PyTorch int8 (gptbook)": quantize.quantize_dynamic_int8(model),
             "PyTorch int8 (torchao)": quantize.torchao_int8(model),
             "ONNX Runtime fp32": onnx.OnnxGPT(fp32_onnx, model.config, threads, name="onnx"),
             "ONNX Runtime int8": onnx.OnnxGPT(int8_onnx, model.config, threads, name="onnx-int8")}
    size = {k: bench.state_dict_bytes(m) for k, m in paths.items() if k.startswith("PyTorch")}
    size.update({"ONNX Runtime fp32": onnx.file_bytes(fp32_onnx), "ONNX Runtime int8": onnx.file_bytes(int8_onnx)})
    return paths, size


def measure_paths(cfg, model, val, directory, repeat: int = 5, threads: int = 0, quality: bool = True) -> dict:
    """Part 2: {path: {measurement: value}} (see the module's docstring)."""
    T = cfg.block_size
    paths, size = deployment_paths(model, directory, threads)
    shapes = {"fwd_8xT": (8, min(256, T)), "fwd_1x16": (1, 16)}
    prompt, new = val[:16][None], min(T - 16, 112)
    out = {k: {"artefact_x_smaller": size[BASE] / size[k]} for k in paths}
    with torch.no_grad():
        for key, (b, t) in shapes.items():
            x = val[:b * t].view(b, t)
            secs = bench.compare_seconds({k: (lambda m=m: m(x)) for k, m in paths.items()}, repeat)
            for k in paths:
                out[k][f"{key}_latency_ratio"] = secs[k] / secs[BASE]
        secs = bench.compare_seconds({k: (lambda m=m: generate(m, prompt, new, temperature=0.0))
                                      for k, m in paths.items()}, max(2, repeat // 2))
        ref = generate(model, prompt, new, temperature=0.0)[0, 16:]
        for k, m in paths.items():
            out[k]["cached_generation_speedup"] = secs[BASE] / secs[k]
            got = generate(m, prompt, new, temperature=0.0)[0, 16:]
            out[k]["greedy_tokens_agree"] = float((got == ref).float().mean())
    if quality:
        p32 = bench.perplexity(model, val, T)
        for k, m in paths.items():
            out[k]["ppl_change"] = bench.perplexity(m, val, T) / p32 - 1
    out[BASE]["shape_8xT"] = shapes["fwd_8xT"][1]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and onnxruntime threads (default: the profile's, quick: 2)")
    ap.add_argument("--untrained", action="store_true",
                    help="part 2 only, on a freshly initialised model of the profile's size (no quality)")
    a = ap.parse_args(argv)
    cfg = config.setup(a.profile)
    threads = a.threads if a.threads is not None else (cfg.threads or 0)
    if threads:
        torch.set_num_threads(threads)
    r = {}
    if a.untrained:
        model = GPT(cfg.model_config()).eval()
        tok = None
        val = torch.randint(0, cfg.vocab_size, (8 * cfg.block_size + 1,), generator=torch.Generator().manual_seed(0))
    else:
        model, tok, _ = train.pretrained(cfg)
        model = model.cpu().eval()
        val = bench.held_out_tokens(cfg, tok)
        r = measure_techniques(cfg, model, tok, val, a.repeat)
        width = max(map(len, r))
        print(f"{'measurement':{width}s}  value")
        for k, v in r.items():
            print(f"{k:{width}s}  {v:.4g}")
    with tempfile.TemporaryDirectory() as d:
        paths = measure_paths(cfg, model, val, d, a.repeat, threads, quality=not a.untrained)
    T8 = paths[BASE].pop("shape_8xT")
    cols = [("fwd_8xT_latency_ratio", f"fwd 8x{T8} / fp32"), ("fwd_1x16_latency_ratio", "fwd 1x16 / fp32"),
            ("artefact_x_smaller", "artefact x smaller"), ("ppl_change", "ppl change"),
            ("cached_generation_speedup", "cached gen speed-up"), ("greedy_tokens_agree", "greedy tokens agree")]
    cols = [(k, h) for k, h in cols if k in paths[BASE]]
    width = max(map(len, paths))
    print()
    print(f"{'path':{width}s}  " + "  ".join(f"{h:>{len(h)}s}" for _, h in cols))
    for name, row in paths.items():
        cells = [f"{row[k]:+.2%}" if k == "ppl_change" else f"{row[k]:.3f}" for k, _ in cols]
        print(f"{name:{width}s}  " + "  ".join(f"{c:>{len(h)}s}" for c, (_, h) in zip(cells, cols)))
    print(json.dumps({"benchmark": "deploy", "profile": a.profile, "trained": not a.untrained,
                      "torch": torch.__version__, "threads": torch.get_num_threads(), "shape_8xT": [8, T8],
                      **{k: round(v, 6) for k, v in r.items()},
                      "paths": {n: {k: round(v, 6) for k, v in row.items()} for n, row in paths.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
