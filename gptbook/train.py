"""Pre-training: the loop of document 001 §3.2.1 (tokenize, forward, cross-entropy, backward, AdamW),
with warm-up + cosine learning rate, gradient clipping, periodic validation and a cached result."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from .config import SHIPPED, Profile, pick_device, progress_enabled
from .model import GPT, GPTConfig


@dataclass
class History:
    """What a training run measured. steps/train_loss every step; val_* every eval_interval."""
    steps: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    val_steps: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    tokens_seen: int = 0
    seconds: float = 0.0

    @property
    def final_val_loss(self) -> float:
        return self.val_loss[-1] if self.val_loss else float("nan")

    def to_dict(self):
        return asdict(self)


def lr_at(step: int, max_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up for `warmup` steps, then cosine decay from max_lr to min_lr at `total`."""
    # warm-up: Adam's moment estimates are still noise in the first steps, and a full-size step
    # on them can throw a fresh model far off (GPT-2/3 and nanoGPT all warm up)
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    # cosine: large steps while the loss falls fast, small ones at the end; it ends at min_lr
    # (max_lr / 10 in both profiles, as nanoGPT and Chinchilla), not 0, so the last steps still learn
    ratio = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def random_batches(n: int, batch_size: int, generator: torch.Generator, make: Callable) -> Callable:
    """get_batch(device) -> make(ix) with each tensor moved to device, where ix is a list of
    batch_size random indices in [0, n) drawn from `generator`. Every training loop of the book
    samples its batches here; `make` says what an index stands for (a window, an example, a pair)."""
    def get_batch(device="cpu"):
        ix = torch.randint(n, (batch_size,), generator=generator).tolist()
        return tuple(t.to(device) for t in make(ix))
    return get_batch


def length_grouped_batches(lengths, batch_size: int, generator: torch.Generator, make: Callable,
                           group: int = 8) -> Callable:
    """get_batch(device) like random_batches, but a batch holds examples of like length, so padding
    to the batch's longest wastes little: `group` batches' worth of random indices are drawn at once
    (one torch.randint), sorted by length, cut into batches, and served in a random order (one
    torch.randperm). Each example is still drawn at random; only which ones share a batch changes.
    This is Hugging Face Trainer's `group_by_length` (its megabatches are 50 batches): on movie
    snippets of 1 to 128 tokens it cuts the positions a batch computes from about 77 to about 48."""
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    queue: list = []

    def get_batch(device="cpu"):
        if not queue:
            ix = torch.randint(len(lengths), (batch_size * group,), generator=generator).tolist()
            ix.sort(key=lambda i: lengths[i])                # stable: ties keep their draw order
            chunks = [ix[k:k + batch_size] for k in range(0, len(ix), batch_size)]
            queue.extend(chunks[j] for j in torch.randperm(group, generator=generator).tolist())
        return tuple(t.to(device) for t in make(queue.pop(0)))
    return get_batch


def batch_fn(tokens: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator,
             targets: Optional[torch.Tensor] = None):
    """Random (x, y) windows from a 1-D token tensor: y is x shifted by one (next-token targets).
    targets (same length as tokens, IGNORE_INDEX = no loss) replaces tokens as the source of y."""
    if tokens.numel() <= block_size + 1:
        raise ValueError(f"need more than block_size+1={block_size + 1} tokens, got {tokens.numel()}")
    if targets is not None and targets.shape != tokens.shape:
        raise ValueError(f"targets must have the tokens' shape {tuple(tokens.shape)}, got {tuple(targets.shape)}")
    source = tokens if targets is None else targets

    def windows(ix):
        x = torch.stack([tokens[i:i + block_size] for i in ix])          # (B, T)
        y = torch.stack([source[i + 1:i + 1 + block_size] for i in ix])  # (B, T)
        return x, y
    return random_batches(tokens.numel() - block_size - 1, batch_size, generator, windows)


def autocast(device, dtype: str, gpu_only: bool = True):
    """torch.autocast to dtype ("bfloat16" | "float16"); a no-op context for "float32", and on a
    CPU (or MPS) unless gpu_only=False. Training keeps the CPU in float32: a profile's dtype is meant
    for GPUs, and CPU bf16 is slower on most CPUs. Chapter 05 measures CPU bf16 on purpose."""
    device = torch.device(device)
    if dtype == "float32" or (gpu_only and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


@torch.no_grad()
def estimate_loss(model, get_batch, iters: int, device, dtype="float32", loss_fn: Optional[Callable] = None) -> float:
    """Mean loss over `iters` random batches in eval mode (no dropout): a cheap, noisy estimate
    for the training curve. stream_loss is the exact one, for the numbers a chapter reports.
    loss_fn(model, x, y) as in train() (a classifier's loss); default model(x, y).loss."""
    was = model.training
    model.eval()
    losses = []
    for _ in range(iters):
        x, y = get_batch(device)
        with autocast(device, dtype):
            losses.append((loss_fn(model, x, y) if loss_fn else model(x, y).loss).item())
    model.train(was)
    return sum(losses) / len(losses)


@torch.no_grad()
def stream_loss(model, ids: torch.Tensor, batch_size: int = 32, device=None, dtype: str = "float32",
                max_windows: Optional[int] = None, block_size: Optional[int] = None):
    """Deterministic loss over the non-overlapping windows of a 1-D token tensor (all of them, or
    the first max_windows); a window is block_size tokens (None: the model's context). Returns
    (mean cross-entropy per predicted token in nats, number of predicted tokens)."""
    T = block_size or model.config.block_size
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    total, n = 0.0, 0
    for _, x, y in windows(ids, T, max_windows, batch_size):
        x, y = x.to(device), y.to(device)
        with autocast(device, dtype):
            total += model(x, y).loss.float().item() * y.numel()
        n += y.numel()
    model.train(was)
    return total / n, n


def windows(ids: torch.Tensor, T: int, max_windows: Optional[int] = None, batch_size: int = 32):
    """The non-overlapping windows of a 1-D token tensor (all, or the first max_windows), in batches:
    yields (starts, x (B, T), y (B, T)) with y = x shifted by one. Every held-out loss of the book
    (stream_loss, and what reads the same positions, e.g. apps.safety.filter_cost) walks them here."""
    starts = list(range(0, ids.numel() - T, T))[:max_windows]
    if not starts:
        raise ValueError(f"need more than block_size={T} tokens, got {ids.numel()}")
    for i in range(0, len(starts), batch_size):
        s = starts[i:i + batch_size]
        yield s, torch.stack([ids[j:j + T] for j in s]), torch.stack([ids[j + 1:j + T + 1] for j in s])


def nats_per_char(model, tok, texts, **kw) -> float:
    """stream_loss over a text (or texts, joined by <|endoftext|>) per character instead of per token:
    the only loss that compares across tokenizers (nats per token x tokens per character)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    eos = tok.token_to_id("<|endoftext|>")
    ids = [i for enc in tok.encode_batch(texts) for i in enc.ids + [eos]]
    loss, _ = stream_loss(model, torch.tensor(ids, dtype=torch.long), **kw)
    return loss * len(ids) / (sum(map(len, texts)) + len(texts))     # <|endoftext|> counted as a character


def distributed() -> tuple:
    """(rank, world size): (0, 1) in one process; under `torchrun` the process's place among the
    workers: the process group's, or torchrun's RANK and WORLD_SIZE before joining it and after
    leaving it (so a script still knows after train() that it is rank 1 and must not write)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def join_workers(device) -> bool:
    """Under `torchrun` (WORLD_SIZE > 1), join the workers' process group unless this process has
    already: nccl when training on CUDA, each worker on the GPU of its LOCAL_RANK; gloo otherwise.
    Returns True if it joined here; that caller leaves it (torch.distributed.destroy_process_group).
    In one process it does nothing and returns False."""
    import torch.distributed as dist
    if distributed()[1] == 1 or dist.is_initialized():
        return False
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def train(model, get_train_batch: Callable, cfg: Profile, get_val_batch: Optional[Callable] = None,
          max_steps: Optional[int] = None, learning_rate: Optional[float] = None,
          grad_accum: int = 1, progress: bool = True, loss_fn: Optional[Callable] = None,
          val_loss_fn: Optional[Callable] = None) -> History:
    """Train `model` in place. get_*_batch(device) -> (x, y). Returns a History.

    loss_fn(model, x, y) -> loss lets fine-tuning reuse this loop with its own objective;
    val_loss_fn (default: loss_fn) is the one measured on validation batches, without gradients.

    Data-parallel under `torchrun` (see `python -m gptbook pretrain`): every worker draws the same
    GLOBAL batch (same generator seed), keeps its 1/world share of the rows, and DistributedDataParallel
    averages the gradients in backward; the mean of equal shards' mean losses is the global batch's
    mean loss, so the run follows the one-process run at the same global batch. Only rank 0 shows
    progress; every rank returns the same History (losses averaged over the workers). A script run
    by torchrun needs no code of its own for this: train() joins the process group when the caller
    has not (join_workers) and then leaves it at the end.
    """
    from tqdm.auto import tqdm
    device = pick_device(cfg.device)
    joined = join_workers(device)
    rank, world = distributed()
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())   # torchrun: one GPU per worker
    model.to(device).train()
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    steps = max_steps if max_steps is not None else cfg.max_steps
    max_lr = learning_rate if learning_rate is not None else cfg.learning_rate
    # a learning rate given here (fine-tuning, a sweep) keeps the profile's floor-to-peak ratio: a
    # fixed floor could sit above a small peak
    min_lr = max_lr * cfg.min_lr / cfg.learning_rate
    # short runs (fine-tuning, 20-step sweeps) would spend most of their steps warming up: at most a
    # tenth of the run, and at least one step (lr_at divides by it)
    warmup = min(cfg.warmup_steps, max(1, steps // 10))
    # the book's GPT decays its matrices only (GPT.configure_optimizers: biases and LayerNorm gains
    # are not what over-fits, and decaying a gain shrinks the normalised signal); heads and wrappers
    # without that method decay every trainable tensor, AdamW's default
    opt = model.configure_optimizers(cfg.weight_decay, max_lr) if hasattr(model, "configure_optimizers") \
        else torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=max_lr,
                               weight_decay=cfg.weight_decay)
    loss_fn = loss_fn or (lambda m, x, y: m(x, y).loss)
    hist = History()
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="training", disable=rank > 0 or not progress_enabled(progress),
               mininterval=1.0)
    for step in bar:
        lr = lr_at(step, max_lr, min_lr, warmup, steps)
        for g in opt.param_groups:
            g["lr"] = lr
        total = 0.0
        for _ in range(grad_accum):
            x, y = get_train_batch(device)
            hist.tokens_seen += x.numel()
            if world > 1:
                if len(x) % world:
                    raise ValueError(f"batch of {len(x)} rows cannot be shared by {world} workers equally; "
                                     f"choose a batch size divisible by {world}")
                x, y = x[rank::world], y[rank::world]        # this worker's share of the global batch
            with autocast(device, cfg.dtype):
                # divided, so that the gradients summed over the micro-batches are those of their mean
                loss = loss_fn(net, x, y) / grad_accum
            loss.backward()
            total += loss.item()
        if world > 1:   # the logged loss is the global batch's: the mean of the workers' shares
            t = torch.tensor([total], device=device)
            torch.distributed.all_reduce(t)
            total = t.item() / world
        if cfg.grad_clip:
            # one unlucky batch can give a gradient many times the usual size; clipping the global
            # norm (1.0, as GPT-3) bounds that step and keeps its direction
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)   # None, not zeros: frees the memory until the next backward
        hist.steps.append(step)
        hist.train_loss.append(total)
        hist.lr.append(lr)
        last = step == steps - 1
        # step 0 measures the untrained model (about ln(vocab_size): a check that the loss is wired
        # right); the last step, the model that is returned
        if get_val_batch is not None and (step % cfg.eval_interval == 0 or last):
            hist.val_steps.append(step)
            hist.val_loss.append(estimate_loss(model, get_val_batch, cfg.eval_iters, device, cfg.dtype,
                                               val_loss_fn or loss_fn))
            bar.set_postfix(train=f"{total:.3f}", val=f"{hist.val_loss[-1]:.3f}")
    hist.seconds = time.perf_counter() - t0
    model.eval()
    if joined:
        torch.distributed.destroy_process_group()
    return hist


def hf_train(hf_model, train_ids: torch.Tensor, cfg: Profile, steps: int,
             learning_rate: Optional[float] = None, output_dir: Optional[str] = None) -> list:
    """The same language-model training through Hugging Face's `Trainer` (warm-up + cosine, AdamW,
    clipping from cfg) on random block_size windows of train_ids. Returns the per-step losses."""
    import tempfile
    from transformers import Trainer, TrainingArguments
    g = torch.Generator().manual_seed(cfg.seed + 2)
    T = hf_model.config.n_positions
    starts = torch.randint(train_ids.numel() - T, (steps * cfg.batch_size,), generator=g).tolist()
    rows = [{"input_ids": train_ids[i:i + T], "labels": train_ids[i:i + T]} for i in starts]
    cuda = pick_device(cfg.device).type == "cuda"
    args = TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="gptbook-hf-"), max_steps=steps,
        per_device_train_batch_size=cfg.batch_size, learning_rate=learning_rate or cfg.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=min(cfg.warmup_steps, max(1, steps // 10)),
        weight_decay=cfg.weight_decay, adam_beta2=0.95, max_grad_norm=cfg.grad_clip,
        logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed, disable_tqdm=True,
        use_cpu=not cuda, bf16=cuda and cfg.dtype == "bfloat16", dataloader_num_workers=0)
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging
    trainer = Trainer(model=hf_model, args=args, train_dataset=rows)
    trainer.remove_callback(PrinterCallback)            # the losses are returned, not printed
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        trainer.train()
    finally:
        hf_logging.set_verbosity(level)
    hf_model.eval()
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


# ---------------------------------------------------------------- the book's pre-trained model

VAL_SHARE = 0.1     # the last 10% of each language's tokens is validation, never trained on


def corpus_tokens(cfg: Profile, tok):
    """(train_ids, val_ids): Shakespeare + a share of Chinese text, tokenized; the last 10% of each
    language is validation."""
    from . import data
    eos = tok.token_to_id("<|endoftext|>")
    en = data.load_shakespeare(cfg.corpus_chars)
    zh = data.load_chinese_text(cfg.corpus_chars // 4 if cfg.corpus_chars else None)
    train_ids, val_ids = [], []
    for text in (en, zh):
        ids = tok.encode(text).ids + [eos]
        # the TAIL of each text, not random windows: training windows overlap, so only a separate
        # stretch of text is never seen; cut per language, so validation holds both in proportion
        cut = int(len(ids) * (1 - VAL_SHARE))
        train_ids += ids[:cut]
        val_ids += ids[cut:]
    return torch.tensor(train_ids, dtype=torch.long), torch.tensor(val_ids, dtype=torch.long)


def shakespeare_val(cfg: Profile, tok):
    """The English validation part of corpus_tokens: (ids (N,), its text) for per-character losses."""
    from . import data
    ids = tok.encode(data.load_shakespeare(cfg.corpus_chars)).ids + [tok.token_to_id("<|endoftext|>")]
    val = ids[int(len(ids) * (1 - VAL_SHARE)):]
    return torch.tensor(val, dtype=torch.long), tok.decode(val)


def broad_corpus_tokens(cfg: Profile, tok):
    """(train_ids, val_ids) for the broad model: every document of data.broad_corpus() (all the
    bundle's English and Chinese text, the tasks' held-out texts left out) in a fixed order (by md5
    of the text, so sources interleave), each followed by <|endoftext|>. Validation is the same
    English stretch as corpus_tokens' (cut out of Shakespeare here too), so the two models' losses on
    it compare, followed by held-out movie snippets and Chinese reviews (in-domain text neither saw)."""
    from . import data
    eos = tok.token_to_id("<|endoftext|>")
    val_en_ids, val_text = shakespeare_val(cfg, tok)
    docs = data.broad_corpus()
    en = "\n\n".join(docs.pop("shakespeare"))            # = data.load_shakespeare()
    at = en.find(val_text)
    if at < 0:
        raise RuntimeError("the English validation stretch is not in Shakespeare's text; "
                           "is the book tokenizer's decode lossless?")
    docs["shakespeare"] = [en[:at], en[at + len(val_text):]]
    order = sorted((t for ds in docs.values() for t in ds), key=lambda t: hashlib.md5(t.encode()).hexdigest())
    train_ids = [i for enc in tok.encode_batch(order) for i in enc.ids + [eos]]
    held = [t for t, _, _ in data.load_vader("movie") if data.heldout(t)]
    held += [t for t, _ in data.load_chinese_sentiment() if data.heldout(t)]
    val_ids = val_en_ids.tolist() + [i for enc in tok.encode_batch(held) for i in enc.ids + [eos]]
    return torch.tensor(train_ids, dtype=torch.long), torch.tensor(val_ids, dtype=torch.long)


CORPORA = {"book": corpus_tokens, "broad": broad_corpus_tokens}


def pretrain(cfg: Profile, progress: bool = True, corpus: str = "book"):
    """Train the book's GPT from scratch: corpus "book" (Shakespeare and Chinese news, chapter 03's
    live run) or "broad" (broad_corpus_tokens: what the shipped model was trained on).
    Returns (model, tokenizer, History)."""
    from .tokenizer import book_tokenizer
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {sorted(CORPORA)}, got {corpus!r}")
    tok = book_tokenizer(cfg.vocab_size, cfg.corpus_chars)
    train_ids, val_ids = CORPORA[corpus](cfg, tok)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)                  # the initial weights
    model = GPT(cfg.model_config())
    # validation batches come from their own generator, so eval_interval and eval_iters do not change
    # which training batches are drawn (they are not in the cache key for that reason)
    hist = train(model, batch_fn(train_ids, cfg.block_size, cfg.batch_size, g), cfg,
                 get_val_batch=batch_fn(val_ids, cfg.block_size, cfg.batch_size,
                                        torch.Generator().manual_seed(cfg.seed + 1)),
                 progress=progress)
    return model.cpu(), tok, hist


def pretrained_key(cfg: Profile) -> str:
    """The name of the book's pre-trained GPT in the cache: every setting that changes its weights,
    so a changed profile never loads a stale model."""
    if cfg.weights != "book":   # fine-tuned from other weights: their name, and what else shapes them
        return f"{weights_key(cfg.weights)}-{cfg.block_size}-{cfg.seed}-{cfg.dtype}"
    keys = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "batch_size",
            "max_steps", "learning_rate", "min_lr", "warmup_steps", "weight_decay", "grad_clip",
            "corpus_chars", "seed", "dtype")
    return "gpt-" + "-".join(str(getattr(cfg, k)) for k in keys)


def weights_key(weights: str) -> str:
    """A cache name for pre-trained weights other than the book's live-trained ones: the name itself
    ("book-broad", "gpt2"...), or for a folder its name and a checksum of its path, config and the
    weight files' sizes and times (another checkpoint saved there gets another name)."""
    folder = Path(weights).expanduser()
    if not folder.is_dir():
        return weights
    parts = [str(folder.resolve())] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                       for p in sorted(folder.iterdir()) if p.is_file()]
    return f"hf-{folder.resolve().name}-{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:8]}"




def model_path(*key) -> Path:
    """Where a cached model lives: <cache>/models/<the key's parts joined by '-'>.pt."""
    from . import data
    return data.cache_dir() / "models" / ("-".join(str(k) for k in key) + ".pt")


def save_checkpoint(model, path, extra: Optional[dict] = None):
    """Weights + extra (e.g. a History) in one file, written atomically; a GPT's config too, so that
    load_checkpoint can rebuild it. Under torchrun only rank 0 writes: every worker holds the same
    weights, and two writers would race for the same temporary file."""
    if distributed()[0] != 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    config = {"config": asdict(model.config)} if isinstance(model, GPT) else {}
    torch.save({**config, "state_dict": model.state_dict(), "extra": extra or {}}, tmp)
    tmp.replace(path)


def load_checkpoint(path, rebuild: str = "", into=None):
    """-> (model in eval mode, extra dict): a GPT rebuilt from the saved config, or `into` (a module
    of the saved shape, e.g. a head on a GPT) with the saved weights. A truncated or corrupted file
    raises data.SetupError (one line: the file, the cause, the fix; `rebuild` says what makes it
    again) instead of torch's zip-reader traceback."""
    from . import data
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        model = into if into is not None else GPT(GPTConfig(**ck["config"]))
        model.load_state_dict(ck["state_dict"])
        # files written before save_checkpoint took heads kept their extras at the top level
        extra = ck["extra"] if "extra" in ck else {k: v for k, v in ck.items() if k != "state_dict"}
    except Exception as e:  # noqa: BLE001 - any failure here means the file is not a good checkpoint
        raise data.unreadable_cache_file(path, e, rebuild) from None
    return model.eval(), extra


def cached_model(path, build: Callable, what: str, rebuild: str = "", into=None, retrain: bool = False):
    """Load-or-build, for every model the book caches: the file at `path` (see model_path) is loaded
    when it exists (see load_checkpoint for `rebuild` and `into`); otherwise, or with retrain,
    build() -> (model, extra dict) makes the model and it is saved there (`what` names it if the
    cache cannot be written). Returns (model in eval mode, extra)."""
    from . import data
    if Path(path).exists() and not retrain:
        return load_checkpoint(path, rebuild, into)
    model, extra = build()
    with data.cache_write(what):
        save_checkpoint(model, path, extra)
    return model.eval(), extra


def pretrained(cfg: Profile, progress: bool = True, retrain: bool = False, weights: Optional[str] = None):
    """The pre-trained GPT a chapter starts from (`weights`, by default the profile's `weights`): for
    "book", the book's own model for this profile, loaded from the cache, or trained and cached.
    Returns (model, tokenizer, History).

    weights: "book" (offline: trained live on Shakespeare and Chinese news), "book-broad"
    (the same architecture pre-trained on the broad corpus, shipped in the repository: shipped_model),
    or OpenAI's GPT-2 ("gpt2", "gpt2-medium", "gpt2-large",
    "gpt2-xl", or a folder with a Hugging Face GPT-2 checkpoint), mapped into the book's GPT with
    GPT-2's tokenizer (gptbook.hf.load_gpt2); its History is empty (nobody here trained it)."""
    weights = weights or cfg.weights
    if weights == SHIPPED:
        return shipped_model(cfg)
    if weights != "book":
        from .hf import load_gpt2
        from .tokenizer import gpt2_bpe
        return load_gpt2(weights), gpt2_bpe(), History()
    from . import data
    from .tokenizer import book_tokenizer
    cfg = replace(cfg, weights="book")   # the cache key of the live-trained model (pretrained_key)
    trained = {}

    def build():
        model, trained["tok"], hist = pretrain(cfg, progress=progress)
        return model, {"history": hist.to_dict()}
    path = model_path(pretrained_key(cfg))
    model, extra = cached_model(path, build, "the pre-trained model", retrain=retrain,
                                rebuild=f"the next run of chapter 03 (python -m gptbook run 03 "
                                        f"--profile {cfg.name}) trains it again")
    hist = History(**extra["history"])
    if not trained:
        return model, book_tokenizer(cfg.vocab_size, cfg.corpus_chars), hist
    with data.cache_write("the pre-trained model"):   # a summary beside the weights, for people
        path.with_suffix(".json").write_text(json.dumps({"val_loss": hist.final_val_loss,
                                                         "seconds": hist.seconds}))
    return model, trained["tok"], hist


# ---------------------------------------------------------------- the shipped broad model

WEIGHTS_DIR = Path(__file__).parent / "weights"


def shipped_manifest(folder: Optional[Path] = None) -> dict:
    """What gptbook/weights/book-broad.json (or the one in `folder`) records of the shipped model:
    sha256 of its files, the command that made it, its settings, corpus and validation figures."""
    return json.loads(((folder or WEIGHTS_DIR) / f"{SHIPPED}.json").read_text())


def shipped_model(cfg: Profile, folder: Optional[Path] = None):
    """The book's GPT pre-trained on the broad corpus (broad_corpus_tokens), shipped in the repository
    because 2 CPU cores cannot afford its training inside `make book`; `python -m gptbook pretrain
    --corpus broad ...` (the command in its manifest) makes it again. Its files are checked against the
    manifest's sha256 (`folder`: another copy of gptbook/weights). Returns (model, its tokenizer,
    History) like pretrained()."""
    from tokenizers import Tokenizer
    from . import data
    folder = folder or WEIGHTS_DIR
    man = shipped_manifest(folder)
    files = {"weights": folder / f"{SHIPPED}.pt", "tokenizer": folder / f"{SHIPPED}.tokenizer.json"}
    for what, path in files.items():
        if not path.exists() or data.sha256(path) != man["sha256"][what]:
            raise data.SetupError(f"{path} is missing or not the file the manifest records (sha256); "
                                  "fix: git checkout -- gptbook/weights (a Git LFS pointer needs `git lfs pull`), "
                                  f"or make it again with: {man['command']}")
    model, extra = load_checkpoint(files["weights"])
    if model.config != cfg.model_config():
        raise ValueError(f"weights={SHIPPED!r} is a {model.config.n_layer}-layer, {model.config.n_embd}-wide GPT "
                         f"with vocabulary {model.config.vocab_size} and context {model.config.block_size} "
                         f"(the quick profile's); profile {cfg.name!r} asks for {cfg.model_config()}. Use the "
                         f"quick profile, or train one for this profile: {man['command']}")
    return model, Tokenizer.from_file(str(files["tokenizer"])), History(**extra["history"])
