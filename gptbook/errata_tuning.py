"""Errata about the documents' training and fine-tuning code (chapter 03), each demonstrated by code.

The failing lines are copied from the documents and run on the installed libraries with tiny random
models (no download). Registered into `gptbook.errata.REGISTRY` on import.
"""
from __future__ import annotations

import torch

from .errata import erratum, error_of, gpt2_tok, quiet, seeded, tiny_gpt, tiny_hf_config


def _seqcls(num_labels: int = 2, pad: bool = True):
    """A tiny random GPT2ForSequenceClassification."""
    from transformers import GPT2ForSequenceClassification
    with quiet():
        m = GPT2ForSequenceClassification(tiny_hf_config(num_labels=num_labels,
                                                         pad_token_id=0 if pad else None))
    return m.eval()


@erratum("E4", "003", "§5.2 (also 000 §5.2, 002 §5.2)", "03",
         "然后，定义模型和优化器： … from transformers import AdamW",
         "transformers' own AdamW was deprecated and then removed, so the import fails on current versions; "
         "use torch.optim.AdamW. "
         "(000 §5.2 even calls AdamW without importing it.)")
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


@erratum("E5", "000", "§5.2", "03",
         "padding='max_length', truncation=True) … tokenizer = GPT2Tokenizer.from_pretrained('gpt2') … "
         "并对其进行定长padding，最终返回模型所需的输入",
         "GPT-2's tokenizer has no pad token, so padding='max_length' raises; set "
         "tokenizer.pad_token = tokenizer.eos_token, and also model.config.pad_token_id, or "
         "GPT2ForSequenceClassification refuses batches larger than one.")
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


@erratum("E6", "000", "§5.2 (also 003 §5.2)", "03",
         "batch_preds = outputs.logits.argmax(dim=2).to('cpu').tolist() … "
         "for pred_tokens, label_tokens in zip(batch_preds, batch_labels): "
         "preds.append(pred_tokens[:len(label_tokens)]) … 并在每个batch结束后将预测和标签结果存储下来",
         "Sequence-classification logits have shape (batch, num_labels): argmax(dim=2) raises IndexError; "
         "the prediction is logits.argmax(dim=-1), one label per text, not a token sequence.")
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


@erratum("E7", "000", "§4.3, §5.2", "03",
         "判断评论的情感倾向是正面、中性还是负面 … "
         "model = GPT2ForSequenceClassification.from_pretrained('gpt2', num_labels=2)",
         "A three-way task (negative, neutral, positive) needs num_labels=3; with num_labels=2 any "
         "example labelled 2 makes the loss fail.")
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


@erratum("E9", "001", "§3.2.2", "03",
         "因此需要进行微调(Fine-tuning),也称为进一步预训练(Further Pre-training),以使模型适应特定任务。 "
         "微调的基本思路是:在保持大部分模型参数不变的情况下,只对一小部分参数(通常是最后几层)进行调整",
         "Further pre-training is continued language-model training on domain text; fine-tuning trains "
         "on the task's labels. Standard (full) fine-tuning updates every weight; freezing most layers "
         "is one parameter-efficient option, not the definition.")
def _e9():
    with seeded(0):
        m = tiny_gpt().train()
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        x = torch.randint(0, 64, (2, 8))
        m(x, targets=x).loss.backward()
        opt.step()
    changed = [n for n, p in m.named_parameters() if not torch.equal(p, before[n])]
    total = len(before)
    assert len(changed) == total
    return (f"one full fine-tuning step changes {len(changed)}/{total} parameter tensors "
            f"(embeddings and every layer, not only the last ones)")


@erratum("E11", "002", "§5.2", "03",
         "然后，定义模型和优化器： … from transformers import GPT2ForCausalLM, AdamW … outputs = "
         "model(input_ids, attention_mask=attention_mask) loss = outputs.loss … "
         "在每个批次上前向传播计算loss并反向传播更新模型参数",
         "The class is GPT2LMHeadModel (GPT2ForCausalLM does not exist), and a causal LM returns a loss "
         "only when called with labels=input_ids (pads set to -100); without labels outputs.loss is None.")
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


@erratum("E12", "002", "§5.2", "03",
         "def generate_text(model, tokenizer, prefix, max_len=256, num_samples=1): encoding = "
         "tokenizer(prefix, return_tensors='pt', max_length=max_len, padding='max_length', truncation=True)"
         " … 并进行定长padding，最终返回模型所需的输入",
         "A prompt must not be right-padded before generation: the model then continues after the pad "
         "tokens. Generate from the unpadded prompt, or left-pad a batch with an attention mask.")
def _e12():
    from .generate import generate, left_pad
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


@erratum("E15", "003", "§5.2", "03",
         "from transformers import GPT3Tokenizer, GPT3ForSequenceClassification … "
         "# 对token-wise的标签进行编码 encoded_labels = [label] * self.max_len … "
         "label2id = {0: 'negative', 1: 'positive'} id2label = {0: 'negative', 1: 'positive'}",
         "transformers has no GPT-3 classes and GPT-3's weights were never released (GPT-3 is reachable "
         "only through OpenAI's API); a sequence task has one label per text, not one per token; and "
         "label2id must map names to ids (the inverse of id2label).")
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


@erratum("E17", "004", "§5.2", "03",
         "下面我们以GPT-2为例，给出使用PyTorch实现GPT-2的代码实现。 … "
         "x = self.emb(x) + self.pos_enc(pos) + self.emb_dropout(x) … "
         "以上就是使用PyTorch实现GPT-2的完整代码。",
         "The script does not run: dropout is applied to integer token ids and added to the embeddings, "
         "nn.TransformerEncoderLayer gets True/True/False as activation/layer_norm_eps/batch_first, "
         "seq_len and batch_size are undefined, the loss compares one position with a whole sequence; "
         "its targets are random (nothing to learn) and its sizes are not GPT-2's.")
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
