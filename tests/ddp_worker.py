"""Run by tests/test_train.py::test_data_parallel_follows_one_process, once as a plain process and
once under `torchrun --nproc_per_node 2`: the book's loop on a tiny GPT and a learnable token stream.
Rank 0 writes the History and a checksum of the weights to argv[1]."""
import json
import os
import sys
from dataclasses import replace

import torch
import torch.distributed as dist

from gptbook import config, train
from gptbook.model import GPT, GPTConfig

if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    dist.init_process_group("gloo")
torch.set_num_threads(1)
cfg = replace(config.get_profile("quick"), batch_size=8, block_size=16, max_steps=12, warmup_steps=2,
              eval_interval=4, eval_iters=2, device="cpu", dtype="float32")
ids = torch.arange(3000) % 23 * 2 % 64                       # a periodic stream: the loss can fall
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
rows = []                                                     # rows this worker trained on, per forward
model.register_forward_pre_hook(lambda m, args: rows.append(len(args[0])) if m.training else None)
hist = train.train(model, train.batch_fn(ids, 16, 8, torch.Generator().manual_seed(0)), cfg,
                   get_val_batch=train.batch_fn(ids, 16, 8, torch.Generator().manual_seed(1)), progress=False)
rank, world = train.distributed()
if rank == 0:
    with open(sys.argv[1], "w") as f:
        json.dump({"world": world, "history": hist.to_dict(), "rows": sum(rows),
                   "weights": [float(p.detach().double().sum()) for p in model.parameters()]}, f)
if dist.is_initialized():
    dist.destroy_process_group()
