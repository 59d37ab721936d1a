"""Quality of the book's pre-trained GPT per profile, next to nanoGPT's published shakespeare figure.

    python benchmarks/bench_quality.py [--profiles quick full] [--train-missing]

Loss per token depends on the tokenizer, so the comparison with nanoGPT (character-level) is made
per CHARACTER: total cross-entropy over the English validation text / number of its characters.
nanoGPT's README reports val loss 1.4697 nats/char for shakespeare_char (6 layers, 6 heads, 384
wide, context 256, 5000 iterations); that figure is quoted, not measured here. Profiles whose model
is not in the cache are skipped unless --train-missing (the full profile needs a GPU to be quick).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gptbook import config, train  # noqa: E402

NANOGPT_SHAKESPEARE_CHAR_VAL = 1.4697   # nats/char, nanoGPT README (quoted)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="*", default=["quick", "full"])
    ap.add_argument("--train-missing", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    for name in a.profiles:
        cfg = config.setup(name)
        path = train.model_path(train.pretrained_key(cfg))
        if not path.exists() and not a.train_missing:
            print(f"{name}: no cached model ({path.name}); run chapter 03 in this profile or pass --train-missing")
            continue
        model, tok, hist = train.pretrained(cfg, progress=False)
        model.to(cfg.torch_device)
        ids, text = train.shakespeare_val(cfg, tok)
        loss_tok, n_tok = train.stream_loss(model, ids, device=cfg.torch_device, dtype=cfg.dtype)
        T = model.config.block_size
        chars = len(tok.decode(ids[:(ids.numel() - 1) // T * T + 1].tolist()))  # text the windows cover
        per_char = loss_tok * n_tok / chars
        rows.append({"profile": name, "params": model.num_params(), "val_loss_per_token": loss_tok,
                     "val_loss_per_char": per_char, "tokens": n_tok, "chars": chars,
                     "train_seconds": hist.seconds})
    print("| profile | parameters | English val loss (nats/token) | (nats/char) "
          "| nanoGPT shakespeare-char (nats/char, quoted) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['profile']} | {r['params']:,} | {r['val_loss_per_token']:.3f} | {r['val_loss_per_char']:.3f} | "
              f"{NANOGPT_SHAKESPEARE_CHAR_VAL} |")
    print(json.dumps({"bench": "quality", "date": time.strftime("%Y-%m-%d"), "rows": rows,
                      "nanogpt_quoted": NANOGPT_SHAKESPEARE_CHAR_VAL}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
