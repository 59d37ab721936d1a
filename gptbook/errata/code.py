"""Further errata in the documents' code, evaluation and training advice (mostly chapter 03),
each demonstrated by running the document's lines or a numeric check. Registered on import.
"""
from __future__ import annotations

import ast
import math

import torch

from .helpers import error_of, quiet, seeded, small, tiny_forward, tiny_gpt, tiny_hf_config
from .registry import erratum


def undefined_names(code: str, defined: dict) -> list:
    """Run `code` again and again; each NameError names one variable nobody defined: stub it, go on."""
    env = {"print": lambda *a, **k: None, **defined}
    missing = []
    for _ in range(20):
        try:
            exec(code, env)
            return missing
        except NameError as e:
            missing.append(e.name)
            env[e.name] = lambda *a, **k: []
    raise AssertionError(f"too many undefined names: {missing}")


@erratum("E21")
def _e21():
    from sklearn.metrics import precision_score, recall_score
    labels, preds = [0, 1, 2, 2, 0], [0, 2, 2, 1, 0]          # negative / neutral / positive
    err = error_of(lambda: precision_score(labels, preds))
    p = precision_score(labels, preds, average="macro")
    r = recall_score(labels, preds, average="macro")
    assert err.startswith("ValueError")
    return f"three-way labels: {err}; with average='macro': precision {p:.3f}, recall {r:.3f}"


@erratum("E22")
def _e22():
    import torch.nn as nn
    from ..model import PUBLISHED, count_params
    cfg, m = PUBLISHED["GPT-2 small"], 64                   # bottleneck size m
    adapters = nn.ModuleList(nn.Sequential(nn.Linear(cfg.n_embd, m), nn.GELU(), nn.Linear(m, cfg.n_embd))
                             for _ in range(2 * cfg.n_layer))  # after attention and after the MLP
    added = sum(p.numel() for p in adapters.parameters())
    base = count_params(cfg)
    assert added > 0
    return (f"GPT-2 small {base / 1e6:.1f}M + adapters (m={m}, 2 per block) {added / 1e6:.2f}M = "
            f"{(base + added) / 1e6:.1f}M parameters (+{added / base:.1%}); "
            f"only the {added / 1e6:.2f}M are trained")


@erratum("E23")
def _e23():
    from importlib.metadata import metadata

    from packaging.specifiers import SpecifierSet
    req = {pkg: metadata(pkg)["Requires-Python"] for pkg in ("torch", "transformers")}
    ok38 = {pkg: SpecifierSet(spec).contains("3.8") for pkg, spec in req.items()}
    assert not any(ok38.values())
    return f"Requires-Python of the installed versions: {req}; Python 3.8 satisfies them: {ok38}"


_DOC02_MAIN = '''epochs = 5
batch_size = 8

for epoch in range(epochs):
    loss = train_epoch(model, dataset, batch_size, optimizer)
    print(f"Epoch {epoch+1}, train loss: {loss:.3f}")

    print(f"Epoch {epoch+1}, dev results:")
    eval_preds = evaluate(model, dataset, batch_size)
    print(classification_report(eval_labels, eval_preds))

print("Test results:")
test_preds = evaluate(model, test_dataset, batch_size)
print(classification_report(test_labels, test_preds))
'''


@erratum("E28")
def _e28():
    from transformers import GPT2LMHeadModel
    stubs = {"train_epoch": lambda *a: 0.0, "evaluate": lambda *a: [], "model": None, "optimizer": None}
    missing = undefined_names(_DOC02_MAIN, stubs)
    with seeded(0), quiet():
        m = GPT2LMHeadModel(tiny_hf_config(vocab_size=50257)).eval()
        with torch.no_grad():
            logits = m(torch.randint(0, 50257, (1, 6))).logits
    preds = logits.argmax(-1)[0].tolist()
    assert logits.shape[-1] == 50257 and max(preds) > 8 and "classification_report" in missing
    return (f"undefined in the main script: {missing}; the LM head scores {logits.shape[-1]} vocabulary "
            f"tokens per position (argmax e.g. {preds[:3]}), not the 9 BIO tags of the table")


_TABLE02 = {  # 002 §5.4, verbatim: precision, recall, f1, support
    "B-LOC": (0.926, 0.906, 0.916, 1668), "I-LOC": (0.900, 0.805, 0.850, 257),
    "B-MISC": (0.875, 0.856, 0.865, 702), "I-MISC": (0.838, 0.782, 0.809, 216),
    "B-ORG": (0.914, 0.898, 0.906, 1661), "I-ORG": (0.911, 0.894, 0.902, 835),
    "B-PER": (0.964, 0.957, 0.960, 1617), "I-PER": (0.983, 0.980, 0.982, 1156),
    "O": (0.993, 0.995, 0.994, 38323)}


@erratum("E29")
def _e29():
    from seqeval.metrics import f1_score as entity_f1
    total = sum(r[3] for r in _TABLE02.values())
    o_share = _TABLE02["O"][3] / total
    tp = {k: r[1] * r[3] for k, r in _TABLE02.items() if k != "O"}
    pred = {k: tp[k] / _TABLE02[k][0] for k in tp}
    sup = sum(_TABLE02[k][3] for k in tp)
    p, r = sum(tp.values()) / sum(pred.values()), sum(tp.values()) / sup
    f1 = 2 * p * r / (p + r)
    y_true = [["B-PER", "I-PER", "O", "O", "O", "O", "O", "O", "O", "O"]]
    y_pred = [["O"] * 10]
    token_acc = sum(a == b for a, b in zip(y_true[0], y_pred[0])) / 10
    ent = entity_f1(y_true, y_pred)
    assert total == 46435 and f1 < 0.95 and ent == 0.0
    return (f"support {total} tokens, {o_share:.1%} of them 'O' (an all-O tagger scores {o_share:.1%} token "
            f"accuracy); micro-F1 over the 8 entity tags from the table itself: {f1:.3f}; a tagger that "
            f"misses the only entity: token accuracy {token_acc:.0%}, seqeval entity F1 {ent:.1f}")


@erratum("E30")
def _e30():
    from transformers import GPT2LMHeadModel
    ids, mask = torch.tensor([5, 6, 7, 0, 0, 0, 0, 0]), torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    with seeded(0), quiet():
        m = GPT2LMHeadModel(tiny_hf_config()).eval()
        err1 = error_of(lambda: m.generate(ids, attention_mask=mask, max_length=8))
        err2 = error_of(lambda: m.generate(ids[None], attention_mask=mask[None], max_length=8))
        ok = m.generate(ids[None, :3], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert ok.shape == (1, 7)
    return (f"1-D input_ids: {err1}; prompt padded to max_len with max_length=max_len: {err2[:95]}...; "
            f"unpadded prompt with max_new_tokens=4 -> {ok.shape[1] - 3} new tokens")


@erratum("E32")
def _e32():
    imports = '''from transformers import GPT3Tokenizer, GPT3ForSequenceClassification
from torch.utils.data import Dataset, DataLoader
import torch
import numpy as np
from transformers import AdamW
from tqdm import tqdm
'''
    names = sorted({a.asname or a.name for n in ast.walk(ast.parse(imports))
                    if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names})
    err = error_of(lambda: exec("print(classification_report(labels, preds))", {"labels": [], "preds": []}))
    assert "classification_report" not in names and err.startswith("NameError")
    return f"names the document imports: {names}; its last line -> {err}"


@erratum("E35")
def _e35():
    V, T = 16, 8
    with seeded(0):
        m = tiny_gpt(vocab_size=V, block_size=T).train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        for _ in range(60):
            x, y = torch.randint(0, V, (8, T)), torch.randint(0, V, (8, T))  # random targets, as the script
            loss = m(x, targets=y).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            test = m(torch.randint(0, V, (64, T)), targets=torch.randint(0, V, (64, T))).loss.item()
    pos = torch.arange(T).view(-1, 1).repeat(1, T)
    assert abs(test - math.log(V)) < 0.3 and pos.shape == (T, T) and pos[3].tolist() == [3] * T
    return (f"after 60 steps on random targets the loss on new ones is {test:.3f} ~ ln({V}) = "
            f"{math.log(V):.3f}: nothing learned; the script's pos has shape {tuple(pos.shape)}, row 3 = "
            f"{pos[3].tolist()}")


@erratum("E37")
def _e37():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
    y = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    p = [1, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    a, pr, r, f1 = accuracy_score(y, p), precision_score(y, p), recall_score(y, p), f1_score(y, p)
    hm = lambda u, v: 2 * u * v / (u + v)  # noqa: E731
    assert abs(f1 - hm(pr, r)) < 1e-9 and abs(f1 - hm(a, r)) > 0.1
    return (f"accuracy {a:.2f}, precision {pr:.2f}, recall {r:.2f}: sklearn F1 {f1:.3f} = hmean(precision, "
            f"recall) {hm(pr, r):.3f}; hmean(accuracy, recall) would be {hm(a, r):.3f}")


@erratum("E44")
def _e44():
    import torch.nn.functional as F
    m, x, out = tiny_forward((4, 17), next_token=True)
    per_pos = F.cross_entropy(out.logits.reshape(-1, 64), x[:, 1:].reshape(-1), reduction="none")
    last_only = per_pos.view(4, 16)[:, -1]
    assert per_pos.numel() == 64 and abs(per_pos.mean().item() - out.loss.item()) < 1e-5
    return (f"a (4, 16) batch: logits {tuple(out.logits.shape)}, {per_pos.numel()} next-token targets in one "
            f"pass (loss = their mean, {out.loss.item():.3f}); predicting only x_n would use "
            f"{last_only.numel()} of them")


@erratum("E46")
def _e46():
    import copy

    from ..apps import prompting as apps
    from ..generate import generate
    prompt = apps.few_shot_prompt((47, 38), [(3, 4)], steps=True)        # one worked example, then the question
    idx = torch.tensor([apps.encode(prompt)])
    with seeded(0):
        m = tiny_gpt(vocab_size=len(apps.VOCAB))
        start = {n: p.detach().clone() for n, p in m.named_parameters()}
        tuned = copy.deepcopy(m).train()
        with torch.no_grad():                                           # prompting: inference only
            generate(m, idx, 12, temperature=0.0)
        opt = torch.optim.AdamW(tuned.parameters(), lr=1e-3)           # fine-tuning: a step on the same text
        tuned(idx[:, :-1], targets=idx[:, 1:]).loss.backward()
        opt.step()
    prompted = sum(not torch.equal(p, start[n]) for n, p in m.named_parameters())
    finetuned = sum(not torch.equal(p, start[n]) for n, p in tuned.named_parameters())
    assert prompted == 0 and finetuned > 0
    return (f"a chain-of-thought prompt is input text ({prompt!r}): answering it changes {prompted} weight "
            f"tensors, one fine-tuning step on the same text changes {finetuned}. Wei et al. (arXiv "
            f"2201.11903, 2022-01) introduce it as prompting; chapter 04 §4 measures it without training")



@erratum("E47")
def _e47():
    from sklearn.metrics import precision_recall_fscore_support as prfs
    rows = _TABLE02.values()
    n = sum(r[3] for r in rows)
    weighted = [sum(r[i] * r[3] for r in rows) / n for i in range(3)]   # support-weighted mean of each column
    micro_recall = sum(r[1] * r[3] for r in rows) / n                   # sum of true positives / tokens
    predicted = sum(r[1] * r[3] / r[0] for r in rows)                   # true positives / precision, per tag
    with seeded(0):                                                     # sklearn's formulas, on a random tagging
        y = torch.randint(0, 9, (300,))
        y_hat = torch.where(torch.rand(300) < 0.8, y, torch.randint(0, 9, (300,)))
    p, r, _, s = prfs(y, y_hat, labels=list(range(9)), zero_division=0)
    ok = (abs(prfs(y, y_hat, average="weighted")[1] - (r * s).sum() / s.sum()) < 1e-12
          and abs(prfs(y, y_hat, average="micro")[1] - (r * s).sum() / s.sum()) < 1e-12
          and round(float((r * s / p).sum())) == len(y))
    # rounding the rows to 3 digits moves these sums by 0.0005 at most; the gap is over ten times that
    assert ok and n == 46435 and min(weighted[2], micro_recall) - 0.973 > 0.005 and n - predicted > 50
    return (f"from the table's own rows: weighted avg P {weighted[0]:.3f} R {weighted[1]:.3f} F1 "
            f"{weighted[2]:.3f} (printed 0.973 0.973 0.973); micro recall = sum(recall x support) / {n} = "
            f"{micro_recall:.3f} (printed 0.973); the rows imply {predicted:,.0f} predicted tags for {n:,} "
            f"tokens. sklearn obeys these formulas on a random tagging, with {round(float((r * s / p).sum()))} "
            f"tags predicted for {len(y)} tokens")


@erratum("E48")
def _e48():
    from torch.utils.flop_counter import FlopCounterMode

    def step(m, x):
        """Forward and backward on x (next-token loss); returns (FLOPs, gradients)."""
        m.zero_grad()
        with FlopCounterMode(display=False) as fc:
            m(x[:, :-1], targets=x[:, 1:]).loss.backward()
        return fc.get_total_flops(), [p.grad.clone() for p in m.parameters()]

    k = 4
    with seeded(0):
        m = tiny_gpt()
        x = torch.randint(0, 64, (8, 17))                                  # one batch of 8 sequences
        one, g_one = step(m, x)
        workers = [step(m, shard) for shard in x.chunk(k)]                 # k data-parallel workers
    total = sum(f for f, _ in workers)
    g_avg = [torch.stack(gs).mean(0) for gs in zip(*(g for _, g in workers))]   # the all-reduce
    diff = max((a - b).abs().max().item() for a, b in zip(g_avg, g_one))
    assert total == one and diff < 1e-5
    return (f"one device, batch 8: {one:,} FLOPs forward+backward; {k} data-parallel workers, 2 sequences "
            f"each: {k} x {workers[0][0]:,} = {total:,} FLOPs (ratio {total / one:.3f}), and their averaged "
            f"gradient equals the one-device gradient (max diff {small(diff)}): the same work split {k} ways, "
            f"faster on the clock, not cheaper")


@erratum("E51")
def _e51():
    from transformers import GPT2ForSequenceClassification, GPT2Model
    with seeded(0), quiet():
        clf = GPT2ForSequenceClassification(tiny_hf_config(num_labels=3, pad_token_id=0)).eval()
        gpt2 = GPT2Model(tiny_hf_config())
        x = torch.tensor([[5, 6, 7, 0, 0]])                               # three tokens, then two pads
        with torch.no_grad():
            logits = clf(x).logits[0]
            pooled = clf.score(clf.transformer(x).last_hidden_state[0, 2])  # the last real token
    ours = {n.removeprefix("transformer."): tuple(p.shape) for n, p in clf.named_parameters()}
    base = {n: tuple(p.shape) for n, p in gpt2.named_parameters()}
    extra = {n: s for n, s in ours.items() if n not in base}
    same = all(ours.get(n) == s for n, s in base.items())
    diff = (logits - pooled).abs().max().item()
    assert same and list(extra) == ["score.weight"] and clf.score.bias is None and diff < 1e-5
    return (f"GPT2ForSequenceClassification(num_labels=3) holds GPT2Model's {len(base)} parameter tensors "
            f"with the same shapes (wte {base['wte.weight']}, wpe {base['wpe.weight']}) plus {extra}; the "
            f"logits of [5, 6, 7, pad, pad] are score(hidden state of token 3) (max diff {small(diff)})")


@erratum("E52")
def _e52():
    from copy import deepcopy
    with seeded(0):
        m = tiny_gpt().train()
        x = torch.randint(0, 64, (2, 9))
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)                   # the document's optimizer

        def step(model, optimizer):
            model(x[:, :-1], targets=x[:, 1:]).loss.backward()
            optimizer.step()

        step(m, opt)
        opt.zero_grad()                                                    # "将优化器状态重置为零"
        params = list(m.parameters())
        no_grad = sum(p.grad is None for p in params)
        kept = sum(float(opt.state[p]["step"]) == 1 and opt.state[p]["exp_avg"].abs().max() > 0 for p in params)
        fresh = deepcopy(m)                                           # same weights, Adam state really reset
        fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
        step(m, opt)
        step(fresh, fresh_opt)
    diff = max((a - b).abs().max().item() for a, b in zip(m.parameters(), fresh.parameters()))
    assert no_grad == kept == len(params) and diff > 1e-5
    return (f"after one Adam step and opt.zero_grad(): .grad is None on {no_grad}/{len(params)} parameter "
            f"tensors, while Adam's state still holds step 1 and a non-zero exp_avg on {kept}/{len(params)}; "
            f"the next update with that state differs from one with the state reset by up to {diff:.1e}")
