"""Run by tests/test_distributed.py, once as a plain process and once under `torchrun
--nproc_per_node 2`: the book's loop on a tiny GPT and a learnable token stream, with no distributed
code of its own (train() joins the workers and leaves them; save_checkpoint writes on rank 0 only).
Usage: ddp_worker.py CHECKPOINT [SEED]; the checkpoint's extra holds the History, the world size and
the rows rank 0 computed forward passes on."""
import sys
from dataclasses import replace

import torch

from gptbook import config, train
from gptbook.model import GPT, GPTConfig

torch.set_num_threads(1)
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
cfg = replace(config.get_profile("quick"), batch_size=8, block_size=16, max_steps=20, warmup_steps=2,
              eval_interval=5, eval_iters=2, device="cpu", dtype="float32")
ids = torch.arange(3000) % 23 * 2 % 64                       # a periodic stream: the loss can fall
torch.manual_seed(seed)
model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
rows = []                                                     # rows this worker trained on, per forward
model.register_forward_pre_hook(lambda m, args: rows.append(len(args[0])) if m.training else None)
# the same seeds in every worker: each draws the same global batch and keeps its share of the rows
hist = train.train(model, train.batch_fn(ids, 16, 8, torch.Generator().manual_seed(seed)), cfg,
                   get_val_batch=train.batch_fn(ids, 16, 8, torch.Generator().manual_seed(seed + 1)),
                   progress=False)
train.save_checkpoint(model, sys.argv[1], {"history": hist.to_dict(), "world": train.distributed()[1],
                                           "rows": sum(rows)})
