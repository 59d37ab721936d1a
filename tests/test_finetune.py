"""gptbook.finetune.tasks on tiny configs: pooling, padding invariance, HF parity, label alignment."""
import pytest
import torch

from gptbook.finetune import tasks as finetune
from gptbook.finetune.tasks import GPTForSequenceClassification, GPTForTokenClassification
from gptbook.generate import left_pad, pad
from gptbook.model import GPT, IGNORE_INDEX

PAD = 1


def test_last_token_index_right_and_left_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert finetune.last_token_index(mask).tolist() == [2, 4, 4]


def test_head_pools_the_last_non_pad_token(tiny_config):
    clf = GPTForSequenceClassification(GPT(tiny_config), 3, PAD).eval()
    x = torch.tensor([[5, 6, 7, PAD, PAD]])
    h = clf.gpt(x[:, :3]).hidden_states[:, -1]          # hidden state of token 7
    torch.testing.assert_close(clf(x).logits, clf.score(h), rtol=1e-5, atol=1e-6)


def test_mean_pooling_head_averages_the_real_tokens_and_ignores_padding(tiny_config):
    clf = GPTForSequenceClassification(GPT(tiny_config), 3, PAD, pool="mean").eval()
    x = torch.tensor([[5, 6, 7, PAD, PAD]])
    h = clf.gpt(x[:, :3]).hidden_states.mean(1)          # the mean of tokens 5, 6, 7
    torch.testing.assert_close(clf(x).logits, clf.score(h), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pool must be"):
        GPTForSequenceClassification(GPT(tiny_config), 3, PAD, pool="max")


def test_padding_does_not_change_the_classification(tiny_config):
    clf = GPTForSequenceClassification(GPT(tiny_config), 3, PAD).eval()
    seqs = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    alone = torch.cat([clf(torch.tensor([s])).logits for s in seqs])
    right, mask = pad(seqs, PAD, "right")
    left, lmask = left_pad(seqs, PAD)
    torch.testing.assert_close(clf(right, attention_mask=mask).logits, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(clf(left, attention_mask=lmask).logits, alone, rtol=1e-4, atol=1e-5)
    assert finetune.predict(clf, seqs, PAD, batch_size=2).tolist() == alone.argmax(-1).tolist()


def test_predict_by_length_keeps_the_input_order(tiny_config):
    """predict batches sequences of like length together (less padding): the labels come back in the
    order of the input and equal those of batches in input order, for sequence and token heads."""
    torch.manual_seed(0)
    seqs = [torch.randint(2, tiny_config.vocab_size, (n,)).tolist() for n in (9, 2, 14, 5, 1, 11, 3, 7)]
    for head in (GPTForSequenceClassification(GPT(tiny_config), 3, 0),
                 GPTForTokenClassification(GPT(tiny_config), 4, 0)):
        fast = finetune.predict(head, seqs, 0, batch_size=3)
        slow = finetune.predict(head, seqs, 0, batch_size=3, by_length=False)
        one = [finetune.predict(head, [s], 0) for s in seqs]
        if isinstance(fast, list):
            assert [len(p) for p in fast] == [len(s) for s in seqs]
            assert all(torch.equal(a, b) and torch.equal(a, c[0]) for a, b, c in zip(fast, slow, one))
        else:
            assert fast.shape == (len(seqs),) and torch.equal(fast, slow) and torch.equal(fast, torch.cat(one))
    assert finetune.predict(head, [], 0) == []


def test_matches_hf_gpt2_for_sequence_classification(tiny_config):
    from transformers import GPT2ForSequenceClassification
    from gptbook.hf import to_hf
    clf = GPTForSequenceClassification(GPT(tiny_config), 3, PAD).eval()
    hf = to_hf(clf.gpt, cls=GPT2ForSequenceClassification, num_labels=3, pad_token_id=PAD)
    assert hf.config.pad_token_id == PAD and hf.config.num_labels == 3
    hf.score.weight.data.copy_(clf.score.weight)
    x, mask = pad([[5, 6, 7, 8], [9, 10]], PAD, "right")
    y = torch.tensor([0, 2])
    ours, theirs = clf(x, attention_mask=mask, labels=y), hf(input_ids=x, attention_mask=mask, labels=y)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-4, atol=1e-5)


def test_classifier_learns_a_memorisable_batch(tiny_config):
    from gptbook import config
    cfg = config.get_profile("quick", finetune_batch_size=4, warmup_steps=2, threads=None)
    clf = GPTForSequenceClassification(GPT(tiny_config), 2, PAD)
    seqs, labels = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]], [0, 1, 1, 0]
    hist = finetune.train_head(clf, seqs, labels, cfg, PAD, steps=40, learning_rate=1e-2)
    assert hist.train_loss[-1] < 0.2 * hist.train_loss[0]
    assert finetune.predict(clf, seqs, PAD).tolist() == labels


class CharTok:
    """A stand-in for tokenizers.Tokenizer: 'XY' words split into one token per character."""
    class Enc:
        def __init__(self, ids):
            self.ids = ids

    def encode(self, text):
        return self.Enc([2 + (ord(c) % 50) for c in text])

    def token_to_id(self, t):
        return 0


def test_token_labels_align_with_one_sub_token_per_word():
    label2id = {"O": 0, "B-PER": 1, "I-PER": 2}
    words, tags = ["Ann", "met", "Bo"], ["B-PER", "O", "B-PER"]
    ids, labels = finetune.align_token_labels(words, tags, CharTok(), label2id, max_len=100, at="first")
    assert len(ids) == len(labels) == 8
    assert labels == [1, IGNORE_INDEX, IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX, 1, IGNORE_INDEX]
    _, last = finetune.align_token_labels(words, tags, CharTok(), label2id, max_len=100)
    assert last == [IGNORE_INDEX, IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX, 0, IGNORE_INDEX, 1]
    gold, pred = finetune.word_tags([torch.tensor([0, 0, 1, 0, 0, 0, 0, 2])], [last], list(label2id))
    assert gold == [["B-PER", "O", "B-PER"]] and pred == [["B-PER", "O", "I-PER"]]
    ids, labels = finetune.align_token_labels(words, tags, CharTok(), label2id, max_len=4)
    assert len(ids) == len(labels) == 4
    with pytest.raises(ValueError, match="tags"):
        finetune.align_token_labels(words, tags[:2], CharTok(), label2id, 10)


def test_token_head_ignores_padding_labels(tiny_config):
    head = GPTForTokenClassification(GPT(tiny_config), 5, PAD).eval()
    seqs, labels = [[5, 6, 7], [8, 9]], [[1, 2, IGNORE_INDEX], [3, 4]]
    x, mask = pad(seqs, PAD, "right")
    y = torch.full_like(x, IGNORE_INDEX)
    for i, l in enumerate(labels):
        y[i, :len(l)] = torch.tensor(l)
    out = head(x, attention_mask=mask, labels=y)
    assert out.logits.shape == (2, 3, 5)
    keep = y != IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(out.logits[keep], y[keep])
    torch.testing.assert_close(out.loss, ref)
    preds = finetune.predict(head, seqs, PAD)
    assert [len(p) for p in preds] == [3, 2]


def test_stratified_split_is_disjoint_and_keeps_class_shares():
    labels = [0] * 500 + [1] * 100 + [2] * 400
    tr, va, te = finetune.stratified_split(labels, seed=0)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert sorted(tr + va + te) == list(range(1000))
    assert sum(labels[i] == 1 for i in te) == 20 and len(te) == 200
    sub = finetune.subsample(tr, [labels[i] for i in tr], 70, seed=0)
    assert len(sub) == 70 and sum(labels[i] == 1 for i in sub) == 7


def test_scores_macro_f1_weights_rare_class():
    s = finetune.scores([0, 0, 0, 0, 1], [0, 0, 0, 0, 0], ["a", "b"])
    assert s["accuracy"] == pytest.approx(0.8)
    assert s["macro_f1"] == pytest.approx((8 / 9) / 2)
    assert s["confusion"].tolist() == [[4, 0], [1, 0]]


# ---------------------------------------------------------------- dialogue fine-tuning

def test_token_f1_and_echoes():
    assert finetune.token_f1("We are open 9 to 5.", "we are open 9 to 5") == 1.0
    assert finetune.token_f1("open late", "closed") == 0.0
    assert finetune.token_f1("open 9", "open 9 to 5") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert finetune.token_f1("", "") == 1.0 and finetune.token_f1("", "x") == 0.0
    assert finetune.echoes("My printer is not printing.", "my printer is not printing")
    assert not finetune.echoes("Ensure it is powered on.", "My printer is not printing.")
    assert not finetune.echoes("", "My printer is not printing.")


def test_apps_use_the_metric_from_the_floor_below():
    from gptbook.apps import retrieval
    assert retrieval.token_f1 is finetune.token_f1 and retrieval.normalize is finetune.normalize


def test_question_split_has_no_question_on_both_sides():
    pairs = [("My printer is not printing.", "Restart it.", "tech")] * 50          # one pair, repeated
    pairs += [("my printer is NOT printing", "Check the paper.", "tech")]          # the same question
    pairs += [("Hello", "Hi", "greet"), ("Hi", "How are you?", "greet"),          # one conversation:
              ("How are you?", "Fine.", "greet")]                                  # each answer the next question
    pairs += [(f"question {i}", f"answer {i}", "misc") for i in range(20)]
    for seed in range(20):
        tr, va = finetune.question_split(pairs, val=0.3, seed=seed)
        assert not finetune.shared_questions(tr, va)
        assert len(tr) + len(va) == 2 + 3 + 20                                     # repeats kept once
        assert {p[1] for p in tr + va} >= {"Restart it.", "Check the paper."}
        greet = [p for p in va if p[2] == "greet"]
        assert len(greet) in (0, 3)                                                # the conversation stays together
        assert 0 < len(va) < len(tr)
    assert finetune.shared_questions([("A b?", "x")], [("a B", "y")]) == {"a b"}
    runs = finetune.conversations(pairs[50:])
    assert [len(r) for r in runs[:3]] == [1, 3, 1] and runs[1][0][0] == "Hello"


def test_dialogue_splits_on_the_real_corpus():
    from gptbook.config import get_profile
    from gptbook.data import load_dialogues
    pairs = load_dialogues("english")
    assert not any(len(q) == 1 and len(a) == 1 for q, a, _ in pairs)     # no single-character 'pairs'
    for seed in (1337, 1338):
        tr, va = finetune.dialogue_splits(get_profile("quick", seed=seed))
        assert not finetune.shared_questions(tr, va)
        train_pairs = {(finetune.normalize(q), finetune.normalize(a)) for q, a, _ in tr}
        assert not any((finetune.normalize(q), finetune.normalize(a)) in train_pairs for q, a, _ in va)
        assert 0.05 < len(va) / (len(tr) + len(va)) < 0.2
        assert sum(q == "My printer is not printing." for q, _, _ in tr + va) == 1


def test_splits_for_the_broad_model_hold_out_only_questions_it_never_read():
    """Chapter 04 runs on the shipped broad model, which read every chatterbot pair whose question
    data.heldout does not reserve: its dialogue model and topic classifier must be scored on others."""
    from gptbook import data
    from gptbook.apps import nlptasks
    from gptbook.config import get_profile
    pairs = data.load_dialogues("english")
    corpus = data.broad_corpus()
    read = {finetune.normalize(d.split("\n", 1)[0]) for d in corpus["dialogue english"]}
    assert finetune.read_questions(pairs) == read          # the rule is the corpus's own
    for seed in (1337, 1338, 2024):
        tr, va = finetune.dialogue_splits(get_profile("quick", seed=seed, weights="book-broad"))
        assert va and not {finetune.normalize(q) for q, *_ in va} & read
        assert not finetune.shared_questions(tr, va)
        # the live model's split is not restricted: it read none of this corpus
        _, va_live = finetune.dialogue_splits(get_profile("quick", seed=seed))
        assert {finetune.normalize(q) for q, *_ in va_live} & read
    _, test, topics = nlptasks.topic_split(pairs, test=0.17, unread=True)
    texts = {f"{q} {a}" for q, a, _ in pairs if finetune.normalize(q) not in read}
    assert len(topics) >= 5 and test and all(t in texts for t, _ in test)
    with pytest.raises(ValueError, match="never read"):
        finetune.question_split(pairs, 0.3, 0, unread=True)


def test_dialogue_format_with_history_and_cut_reply():
    assert finetune.dialogue_format("Hi?") == "Q: Hi?\nA:"
    assert finetune.dialogue_format("Hi?", "Hello.") == "Q: Hi?\nA: Hello."
    p = finetune.dialogue_format("And you?", history=[("Hi?", "Hello."), ("Name?", "Bot.")])
    assert p == "Q: Hi?\nA: Hello.\nQ: Name?\nA: Bot.\nQ: And you?\nA:"
    assert finetune.cut_reply("\n\n Fine, thanks.\nQ: next") == "Fine, thanks."
    assert finetune.cut_reply(" Fine. Q: what") == "Fine."
    assert finetune.cut_reply("\n\n\n") == ""


class _CharTok:
    """Characters as tokens; id 0 is <|endoftext|>, 1 is <|pad|>."""
    chars = ["", ""] + list("\nabcdefghijklmnopqrstuvwxyz :?.")

    def encode(self, s):
        return type("E", (), {"ids": [self.chars.index(c) for c in s]})()

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def token_to_id(self, s):
        return {"<|endoftext|>": 0, "<|pad|>": 1}[s]

    def get_vocab_size(self):
        return len(self.chars)


class _Scripted(torch.nn.Module):
    """A 'model' that writes a fixed text, one character per step (with the KV-cache protocol of
    gptbook.generate: past_key_values counts the steps); it records how many steps it ran."""

    def __init__(self, text, tok, block_size=64):
        super().__init__()
        self.ids, self.V = tok.encode(text).ids, tok.get_vocab_size()
        self.config = type("C", (), {"block_size": block_size})()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, idx, past_key_values=None, attention_mask=None):
        step = past_key_values or 0
        self.calls += 1
        logits = torch.full((idx.size(0), idx.size(1), self.V), -1e9)
        logits[:, -1, self.ids[min(step, len(self.ids) - 1)]] = 0.0
        return type("O", (), {"logits": logits, "past_key_values": step + 1})()


def test_greedy_replies_stop_at_the_end_of_the_answer():
    tok = _CharTok()
    model = _Scripted("\n\n fine.\nq: more text that never comes", tok)
    replies = finetune.greedy_replies(model, tok, ["q: hi?\na:", "q: how are you?\na:"], max_new_tokens=30)
    assert replies == ["fine.", "fine."]
    assert model.calls == len("\n\n fine.\n")            # stopped at the newline after the text
    blank = _Scripted("\n" * 40, tok)
    assert finetune.greedy_replies(blank, tok, ["q: hi?\na:"], max_new_tokens=10) == [""]
    long = "q: a?\na: b\n" * 10 + "q: c?\na:"                   # 122 characters: the start is cropped
    assert finetune.greedy_replies(_Scripted(" ok.\n", tok), tok, [long], max_new_tokens=8) == ["ok."]


def test_dialogue_model_is_fine_tuned_once_then_loaded(monkeypatch, tmp_path):
    """dialogue_model trains on the training side of the split, caches, and loads the cache next time."""
    from gptbook import train
    from gptbook.config import get_profile
    cfg = get_profile("quick", vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16,
                      finetune_steps=2, finetune_batch_size=2, eval_iters=1)

    class Tok:
        def encode(self, s):
            return type("E", (), {"ids": [2 + ord(c) % 60 for c in s]})()

        def token_to_id(self, s):
            return {"<|endoftext|>": 0, "<|pad|>": 1}[s]
    made = []

    def pretrained(cfg, progress=True):
        made.append(1)
        torch.manual_seed(0)
        return GPT(cfg.model_config()), Tok(), None
    monkeypatch.setattr(train, "pretrained", pretrained)
    monkeypatch.setattr(train, "model_path", lambda *key: tmp_path / ("-".join(map(str, key)) + ".pt"))
    model, _, hist = finetune.dialogue_model(cfg, progress=False)
    assert len(hist.train_loss) == 2 and hist.val_loss and len(list(tmp_path.glob("dialogue-*.pt"))) == 1
    again, _, hist2 = finetune.dialogue_model(cfg, progress=False)
    assert hist2.train_loss == hist.train_loss
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    torch.manual_seed(0)
    start = GPT(cfg.model_config())                               # the 'pre-trained' weights it started from
    assert any(not torch.equal(p, q) for p, q in zip(start.parameters(), again.parameters()))


def test_entity_spans_and_dictionary_baseline():
    from gptbook.finetune.tasks import dictionary_tagger, entity_spans, ner_scores
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG"]) == [(0, 2, "PER"), (3, 4, "LOC"),
                                                                             (4, 5, "LOC"), (5, 6, "ORG")]
    train = [(list("王小明在北京"), ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
             (list("北京大学"), ["B-ORG", "I-ORG", "I-ORG", "I-ORG"])]
    tag = dictionary_tagger(train)
    # the longest known string wins ("北京大学" is an ORG, not "北京" + 2 characters)
    assert tag(list("我去北京大学见王小明")) == ["O", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "O",
                                          "B-PER", "I-PER", "I-PER"]
    gold = [["B-PER", "I-PER", "O"], ["O", "B-LOC"]]
    all_o = [["O"] * len(g) for g in gold]
    assert ner_scores(gold, gold) == {"entity_f1": 1.0, "token_accuracy": 1.0}
    s = ner_scores(gold, all_o)
    assert s["entity_f1"] == 0.0 and s["token_accuracy"] == 2 / 5     # O everywhere: no entity, 40 % "accuracy"
