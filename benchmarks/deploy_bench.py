"""Chapter 05's claims as ratios, measured in one run on the book's pre-trained model.

    python benchmarks/deploy_bench.py [--profile quick] [--repeat 5]

Prints a table, then one JSON line (for CI logs / comparing machines). Ratios > 1 for speed-ups
mean "faster"; size and latency ratios < 1 mean "smaller / faster".
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


def measure(cfg, model, tok, repeat: int = 5) -> dict:
    """Every ratio of chapter 05. model: the book's GPT (CPU, eval)."""
    T = cfg.block_size
    val = bench.held_out_tokens(cfg, tok)
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
        q = quantize.quantize_dynamic_int8(model)
        p50 = prune.global_magnitude_prune(model, 0.5)
        p32 = ppl(model)
        r["bf16_ppl_change"] = ppl(model, dtype="bfloat16") / p32 - 1
        r["int8_size_ratio"] = bench.state_dict_bytes(q) / bench.state_dict_bytes(model)
        r["int8_ppl_change"] = ppl(q) / p32 - 1
        r["prune50_ppl_change"] = ppl(p50) / p32 - 1
        with tempfile.TemporaryDirectory() as d:
            sess = onnx.session(onnx.export(model, Path(d) / "gpt.onnx"), threads=cfg.threads or 0)
            r["onnx_max_abs_diff"] = float((onnx.ort_logits(sess, x) - model(x).logits).abs().max())

            def bf16():
                with bench.autocast("cpu", "bfloat16"):
                    model(x)
            # all forward latencies timed in turn, so the machine's load hits each alike
            t = bench.compare_seconds({"fp32": lambda: model(x), "bf16": bf16, "int8": lambda: q(x),
                                       "prune50": lambda: p50(x),
                                       "onnx": lambda: onnx.ort_logits(sess, x)}, repeat)
        for k in ("bf16", "int8", "prune50", "onnx"):
            r[f"{k}_latency_ratio"] = t[k] / t["fp32"]
    r["fp32_perplexity"] = p32
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    cfg = config.setup(a.profile)
    model, tok, _ = train.pretrained(cfg)
    r = measure(cfg, model.eval(), tok, a.repeat)
    width = max(map(len, r))
    print(f"{'measurement':{width}s}  value")
    for k, v in r.items():
        print(f"{k:{width}s}  {v:.4g}")
    print(json.dumps({"benchmark": "deploy", "profile": a.profile, "torch": torch.__version__,
                      "threads": torch.get_num_threads(),
                      **{k: round(v, 6) for k, v in r.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
