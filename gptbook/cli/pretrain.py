"""`python -m gptbook pretrain`: pre-train the book's GPT outside a notebook, in one process or
data-parallel on several (the same loop, `gptbook.train.train`):

    python -m gptbook pretrain --profile quick
    torchrun --standalone --nproc_per_node 2 -m gptbook pretrain --profile full      # 2 GPUs (or CPU workers)

The result goes where chapters 03-05 look for it (the model cache, under the profile's key) unless
--out names a file. Under torchrun every worker draws the same global batch (batch_size rows) and
trains on its share; only rank 0 writes the checkpoint and prints. On GPUs each worker takes the GPU
of its LOCAL_RANK (backend nccl); on CPU (or with --set device=cpu) the workers talk over gloo.
Data parallelism only (DistributedDataParallel: every worker holds the whole model); the book's
sizes fit one GPU, so there is no FSDP.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path


def _setting(text: str):
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def parse(argv=None):
    from ..config import PROFILES, Profile
    ap = argparse.ArgumentParser(prog="python -m gptbook pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    ap.add_argument("--seed", type=int, default=None, help="default: $GPTBOOK_SEED, else 1337")
    ap.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="NAME=VALUE",
                    help="change a profile setting, e.g. --set max_steps=2000 (repeatable)")
    ap.add_argument("--corpus", default="book", choices=["book", "broad"],
                    help="book: Shakespeare + Chinese news (chapter 03); broad: every text of the bundle, "
                         "the tasks' held-out texts left out (the shipped model)")
    ap.add_argument("--out", type=Path, default=None, help="checkpoint file (default: the model cache)")
    args = ap.parse_args(argv)
    known = {f.name for f in fields(Profile)}
    bad = sorted({n for n, _ in args.settings} - known)
    if bad:
        ap.error(f"unknown setting(s) {bad}; valid: {', '.join(sorted(known))}")
    return args


def write_manifest(path: Path, tok, hist, cfg, argv) -> None:
    """Beside a broad model: its tokenizer (<name>.tokenizer.json) and <name>.json, the manifest that
    train.shipped_model checks: sha256 of both files, the command that made them, the settings,
    training figures and the validation loss (tests/test_shipped.py recomputes it)."""
    import torch

    from .. import data, train
    tok_path = path.with_name(path.stem + ".tokenizer.json")
    tok.save(str(tok_path))
    _, val_ids = train.broad_corpus_tokens(cfg, tok)
    model, _ = train.load_checkpoint(path)
    val_loss, n = train.stream_loss(model, val_ids)
    man = {"command": "python -m gptbook pretrain " + " ".join(argv),
           "made_with": f"torch {torch.__version__}, {train.distributed()[1]} worker(s)",
           "sha256": {"weights": data.sha256(path), "tokenizer": data.sha256(tok_path)},
           "settings": {k: getattr(cfg, k) for k in ("seed", "vocab_size", "block_size", "n_layer", "n_head",
                                                      "n_embd", "batch_size", "max_steps", "learning_rate",
                                                      "min_lr", "warmup_steps", "weight_decay", "corpus_chars")},
           "tokens_seen": hist.tokens_seen, "seconds": round(hist.seconds),
           "val_loss": val_loss, "val_tokens": n,
           "val_loss_means": "train.stream_loss over broad_corpus_tokens' validation ids (nats/token)"}
    path.with_name(path.stem + ".json").write_text(json.dumps(man, indent=1) + "\n")


def main(argv=None):
    args = parse(argv)
    import torch.distributed as dist

    from .. import config, train
    cfg = config.setup(args.profile, seed=args.seed, **dict(args.settings))
    # joined here rather than in train(): the workers wait below for rank 0's tokenizer
    joined = train.join_workers(config.pick_device(cfg.device))
    rank, world = train.distributed()
    try:
        if rank == 0:                               # the tokenizer is trained and cached once, by rank 0
            from ..tokenizer import book_tokenizer
            book_tokenizer(cfg.vocab_size, cfg.corpus_chars)
        if dist.is_initialized():
            dist.barrier()
        model, tok, hist = train.pretrain(cfg, progress=rank == 0, corpus=args.corpus)
        if rank == 0:
            default = train.WEIGHTS_DIR / f"{train.SHIPPED}.pt" if args.corpus == "broad" else \
                train.model_path(train.pretrained_key(cfg))
            path = args.out or default
            train.save_checkpoint(model, path, {"history": hist.to_dict()})
            if args.corpus == "broad":
                write_manifest(path, tok, hist, cfg, argv if argv is not None else sys.argv[1:])
            print(f"{world} worker(s), {len(hist.steps)} steps in {hist.seconds:.0f} s: "
                  f"final validation loss {hist.final_val_loss:.3f} nats/token; saved {path}")
    finally:
        if joined:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
