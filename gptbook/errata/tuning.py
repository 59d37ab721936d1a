"""Errata about the documents' training and fine-tuning code (chapter 03), each demonstrated by code.

The failing lines are copied from the documents and run on the installed libraries with tiny random
models (no download). Registered into `gptbook.errata.REGISTRY` on import.
"""
from __future__ import annotations

import torch

from .helpers import error_of, gpt2_tok, quiet, seeded, tiny_gpt, tiny_hf_config
from .registry import erratum


def _seqcls(num_labels: int = 2, pad: bool = True):
    """A tiny random GPT2ForSequenceClassification."""
    from transformers import GPT2ForSequenceClassification
    with quiet():
        m = GPT2ForSequenceClassification(tiny_hf_config(num_labels=num_labels,
                                                         pad_token_id=0 if pad else None))
    return m.eval()


@erratum("E4")
def _e4():
    err = error_of(lambda: exec("from transformers import AdamW", {}))
    with seeded(0):
        m = tiny_gpt()
        opt = torch.optim.AdamW(m.parameters(), lr=2e-5)
        x = torch.randint(0, 64, (2, 8))
        m.train()
        m(x, targets=x).loss.backward()
        opt.step()
    assert "AdamW" in err
    import transformers
    return (f"transformers {transformers.__version__}: {err}; "
            f"torch.optim.AdamW(model.parameters(), lr=2e-5) steps fine")


@erratum("E5")
def _e5():
    tok = gpt2_tok()
    assert tok.pad_token is None
    call = lambda t: t("a great film", return_tensors="pt", max_length=8, padding="max_length",  # noqa: E731
                       truncation=True)
    err = error_of(call, tok)
    fixed = call(_with_pad(tok))
    with seeded(0):
        m = _seqcls(pad=False)
        x = torch.randint(1, 64, (2, 8))
        err_model = error_of(lambda: m(x))
        m.config.pad_token_id = 0
        ok = m(x).logits.shape
    assert fixed["input_ids"].shape == (1, 8) and tuple(ok) == (2, 2)
    return (f"tokenizer: {err[:60]}...; with pad_token = eos it pads to {tuple(fixed['input_ids'].shape)}; "
            f"model without pad_token_id: {err_model}")


def _with_pad(tok):
    """A copy of the GPT-2 tokenizer with pad = eos (the cached one stays unchanged)."""
    import copy
    t = copy.deepcopy(tok)
    t.pad_token = t.eos_token
    return t


@erratum("E6")
def _e6():
    with seeded(0):
        m = _seqcls()
        x = torch.randint(1, 64, (4, 8))
        with torch.no_grad():
            logits = m(x, attention_mask=torch.ones_like(x)).logits
    err = error_of(lambda: logits.argmax(dim=2))
    preds = logits.argmax(dim=-1).tolist()
    labels = [0, 1, 1, 0]
    err_len = error_of(lambda: [p[:len(lab)] for p, lab in zip(preds, labels)])
    assert err.startswith("IndexError") and len(preds) == 4
    return f"logits {tuple(logits.shape)}: argmax(dim=2) -> {err}; per-token slicing of int labels -> {err_len}"


@erratum("E7")
def _e7():
    with seeded(0):
        x = torch.randint(1, 64, (2, 8))
        y = torch.tensor([0, 2])                                # 0 negative, 1 neutral, 2 positive
        m2 = _seqcls(num_labels=2)
        err = error_of(lambda: m2(x, labels=y))
        m3 = _seqcls(num_labels=3)
        loss = m3(x, labels=y).loss
    assert torch.isfinite(loss)
    return f"num_labels=2 with a 'positive'=2 label: {err}; num_labels=3: loss {loss.item():.3f}"


@erratum("E9")
def _e9():
    import copy
    SEP, NO, YES = 60, 61, 62                       # token ids the task's text never uses

    def task(n, g):                                 # 8 tokens; the label: are most of them >= 16?
        x = torch.randint(0, 32, (n, 8), generator=g)
        return x, ((x >= 16).sum(1) > 4).long()

    def label_accuracy(m, x, y):                    # the label token the model puts after SEP
        with torch.no_grad():
            logits = m(torch.cat([x, torch.full((len(x), 1), SEP)], 1)).logits[:, -1, [NO, YES]]
        return (logits.argmax(-1) == y).float().mean().item()

    with seeded(0):
        g = torch.Generator().manual_seed(0)
        base = tiny_gpt(n_embd=32)
        x_test, y_test = task(200, g)
        further, tuned = copy.deepcopy(base).train(), copy.deepcopy(base).train()
        start = {n: p.detach().clone() for n, p in tuned.named_parameters()}
        opt_f, opt_t = (torch.optim.AdamW(m.parameters(), lr=3e-3) for m in (further, tuned))
        lm_before = base(x_test[:, :-1], targets=x_test[:, 1:]).loss.item()
        for _ in range(160):
            x, y = task(32, g)
            # further pre-training: the task's text with the language-model loss, no labels
            further(x[:, :-1], targets=x[:, 1:]).loss.backward()
            opt_f.step(), opt_f.zero_grad()
            # fine-tuning (standard, full): the same text followed by SEP, loss on its label only
            targets = torch.full((32, 9), -100)
            targets[:, -1] = NO + y
            tuned(torch.cat([x, torch.full((32, 1), SEP)], 1), targets=targets).loss.backward()
            opt_t.step(), opt_t.zero_grad()
        further.eval(), tuned.eval()
        lm_after = further(x_test[:, :-1], targets=x_test[:, 1:]).loss.item()
    acc = {name: label_accuracy(m, x_test, y_test) for name, m in
           (("untrained", base), ("further pre-trained", further), ("fine-tuned", tuned))}
    changed = sum(not torch.equal(p, start[n]) for n, p in tuned.named_parameters())
    assert lm_after < lm_before - 0.3                                   # further pre-training did learn the text
    # it never saw a label, so it labels no better than the untrained model
    assert acc["further pre-trained"] < acc["untrained"] + 0.1 and acc["fine-tuned"] > 0.9
    assert changed == len(start)
    return (f"on a labelled toy task (200 test examples), further pre-training on its text lowers the LM loss "
            f"{lm_before:.2f} -> {lm_after:.2f} but labels {acc['further pre-trained']:.0%} right, like the untrained "
            f"model ({acc['untrained']:.0%}); fine-tuning on the labels: {acc['fine-tuned']:.0%}, and it changed "
            f"{changed}/{len(start)} parameter tensors (embeddings and every layer, not only the last ones)")


@erratum("E11")
def _e11():
    from transformers import GPT2LMHeadModel
    err = error_of(lambda: exec("from transformers import GPT2ForCausalLM", {}))
    with seeded(0), quiet():
        m = GPT2LMHeadModel(tiny_hf_config())
        x = torch.randint(1, 64, (2, 8))
        out = m(x, attention_mask=torch.ones_like(x))
        err_loss = error_of(lambda: out.loss.item())
        fixed = m(x, attention_mask=torch.ones_like(x), labels=x).loss
    assert out.loss is None and torch.isfinite(fixed)
    return f"{err}; without labels: loss={out.loss}, loss.item() -> {err_loss}; with labels: {fixed.item():.3f}"


@erratum("E12")
def _e12():
    from ..generate import generate, left_pad
    prompt, pad = [5, 17, 42, 9], 1
    with seeded(0):
        m = tiny_gpt()
        plain = generate(m, torch.tensor([prompt]), 6, temperature=0)[0, 4:].tolist()
        right = torch.tensor([prompt + [pad] * 4])
        right_mask = torch.tensor([[1] * 4 + [0] * 4])
        r = generate(m, right, 6, temperature=0, attention_mask=right_mask)[0, 8:].tolist()
        idx, mask = left_pad([prompt, [3, 3, 3, 3, 3, 3, 3, 3]], pad)
        left = generate(m, idx, 6, temperature=0, attention_mask=mask)[0, 8:].tolist()
    assert left == plain and r != plain
    return (f"greedy continuation of the unpadded prompt: {plain}; left-padded in a batch: {left} (same); "
            f"right-padded to 8 tokens: {r} (continues after the pads)")


@erratum("E15")
def _e15():
    errs = [error_of(lambda n=n: exec(f"from transformers import {n}", {}))
            for n in ("GPT3Tokenizer", "GPT3ForSequenceClassification")]
    with seeded(0):
        m = _seqcls()
        x = torch.randint(1, 64, (2, 8))
        labels = torch.tensor([[1] * 8, [0] * 8])               # "[label] * self.max_len"
        err = error_of(lambda: m(x, labels=labels))
    label2id = {0: "negative", 1: "positive"}
    id2label = {0: "negative", 1: "positive"}
    assert label2id == id2label and all("GPT3" in e for e in errs)
    return (f"{errs[0]}; {errs[1]}; token-wise labels {tuple(labels.shape)} for a sequence task: {err}; "
            f"label2id == id2label: {label2id == id2label} (should be {{'negative': 0, 'positive': 1}})")


# document 004 §5.2, the lines that fail, verbatim (sizes shrunk so the demo runs in milliseconds)
_DOC17 = {
    "TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, True, True, False)":
        "layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, True, True, False)\n"
        "layer(torch.randn(seq, 1, d_model))",
    "self.emb(x) + self.pos_enc(pos) + self.emb_dropout(x)":
        "emb_dropout = nn.Dropout(dropout); emb_dropout.train()\n"
        "x = torch.randint(0, vocab_size, (1, seq))\nemb(x) + pos_enc(pos) + emb_dropout(x)",
    "torch.randint(0, vocab_size, (1, seq_len))":
        "x = torch.randint(0, vocab_size, (1, seq_len))",
    "criterion(output, torch.randint(0, vocab_size, (1, seq_len)))":
        "output = nn.functional.log_softmax(torch.randn(1, vocab_size), dim=-1)  # x[:, -1, :] -> (1, V)\n"
        "nn.NLLLoss()(output, torch.randint(0, vocab_size, (1, seq)))",
}


@erratum("E17")
def _e17():
    import torch.nn as nn
    out = []
    for name, code in _DOC17.items():
        with seeded(0):
            env = {"torch": torch, "nn": nn, "vocab_size": 100, "d_model": 16, "n_heads": 2, "d_ff": 32,
                   "dropout": 0.1, "seq": 6, "emb": nn.Embedding(100, 16),
                   "pos_enc": nn.Embedding(5000, 16), "pos": torch.arange(6)}
            out.append(f"{name} -> {error_of(lambda: exec(code, env))}")
    layer = nn.TransformerEncoderLayer(16, 2, 32, 0.1, True, True, False)
    doc = dict(vocab_size=10000, emb_dim=512, n_heads=8, d_ff=2048)
    gpt2 = dict(vocab_size=50257, emb_dim=768, n_heads=12, d_ff=4 * 768)
    assert layer.norm1.eps == 1.0 and layer.activation is True and doc != gpt2
    out.append(f"layer_norm_eps=True -> eps={float(layer.norm1.eps)}; sizes {doc} vs GPT-2 small {gpt2}")
    return "; ".join(out)
