"""Chapter 04 §6: confidence intervals, the likelihood probe, the offensive-word list and the output
filter (exact: no listed word gets through, whatever the tokenizer and the model do)."""
import random

import pytest
import torch

from gptbook import tokenizer
from gptbook.apps import nlptasks, safety, stats
from gptbook.generate import generate
from gptbook.model import GPT, GPTConfig

CORPUS = ["the god of war and the goddess of love", "God save the king", "an ass, a bass, a class to assist",
          "Gods and gods, good dogs do go", "so goes the sad day"] * 20
WORDS = frozenset({"god", "ass"})


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A byte-level BPE (the book's scheme) trained on a small corpus full of the listed words."""
    return tokenizer.train_bpe(CORPUS, vocab_size=300, path=tmp_path_factory.mktemp("tok") / "t.json")


@pytest.fixture
def model(tok):
    cfg = GPTConfig(vocab_size=tok.get_vocab_size(), block_size=32, n_layer=2, n_head=2, n_embd=32)
    return GPT(cfg).eval()


# ---------------------------------------------------------------- intervals

def test_wilson_known_values_and_edges():
    lo, hi = stats.wilson(36, 800)
    assert (round(lo, 4), round(hi, 4)) == (0.0327, 0.0617)
    assert stats.wilson(0, 800)[0] == 0.0 and 0.004 < stats.wilson(0, 800)[1] < 0.005   # not empty at k = 0
    assert stats.wilson(5, 5)[1] == 1.0
    with pytest.raises(ValueError):
        stats.wilson(3, 2)


def test_resample_counts_rows_sum_to_n():
    w = stats.resample_counts(7, n_boot=50, seed=1)
    assert w.shape == (50, 7) and torch.all(w.sum(1) == 7)
    assert torch.equal(w, stats.resample_counts(7, n_boot=50, seed=1))


def test_macro_f1_matches_sklearn_also_per_resample():
    from sklearn.metrics import f1_score
    g = torch.Generator().manual_seed(0)
    y, p = torch.randint(4, (60,), generator=g), torch.randint(5, (60,), generator=g)   # class 4 only predicted
    assert stats.macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))
    w = stats.resample_counts(60, n_boot=3, seed=2)
    for b in range(3):
        idx = torch.repeat_interleave(torch.arange(60), w[b].long())
        assert stats.macro_f1(y, p, w)[b].item() == pytest.approx(f1_score(y[idx], p[idx], average="macro"))


def test_mean_ci_contains_the_mean_and_narrows_with_n():
    g = torch.Generator().manual_seed(0)
    small, big = torch.randn(20, generator=g), torch.randn(2000, generator=g)
    m, lo, hi = stats.mean_ci(small)
    assert lo < m < hi
    _, lo2, hi2 = stats.mean_ci(big)
    assert hi2 - lo2 < (hi - lo) / 3


def test_two_way_interval_counts_frames_as_the_samples():
    # every sentence of a frame shares the frame's offset: 160 sentences, but only 16 independent frames
    g = torch.Generator().manual_seed(0)
    d = torch.randn(16, 1, generator=g) + 0.05 * torch.randn(16, 10, generator=g)
    m, lo, hi = stats.two_way_mean_ci(d)
    _, nlo, nhi = stats.mean_ci(d.flatten())
    assert lo < m < hi and (hi - lo) > 2 * (nhi - nlo)
    assert stats.sign(0.1, 0.2) == 1 and stats.sign(-0.2, -0.1) == -1 and stats.sign(-0.1, 0.1) == 0


# ---------------------------------------------------------------- the likelihood probe

def test_continuation_logprobs_is_the_sum_of_token_logprobs(model, tok):
    from gptbook.mathx import sequence_logprob
    eos = tok.token_to_id("<|endoftext|>")
    texts, ctx = ["the god of war", "so goes"], ["", "an ass"]
    got = nlptasks.continuation_logprobs(model, tok, ctx, texts)
    for c, t, v in zip(ctx, texts, got):
        c_ids, t_ids = [eos] + tok.encode(c).ids, tok.encode(t).ids
        whole = sequence_logprob(model, torch.tensor([c_ids + t_ids]))[0]
        head = sequence_logprob(model, torch.tensor([c_ids]))[0] if len(c_ids) > 1 else 0.0
        assert v.item() == pytest.approx(float(whole - head), abs=1e-4)
    torch.testing.assert_close(got, nlptasks.continuation_logprobs(model, tok, ctx, texts, batch_size=1))


def test_association_is_negative_minus_positive_per_group(model, tok):
    frames, adjectives = ["The {g} is {a}.", "A {g} was {a}."], [("good", "bad")]
    s = safety.association(model, tok, ("king", "queen"), frames, adjectives)
    assert s.shape == (2, 1, 2)
    lp = lambda t: nlptasks.continuation_logprobs(model, tok, [""], [t])[0]    # noqa: E731
    assert s[1, 0, 1].item() == pytest.approx((lp("A queen was bad.") - lp("A queen was good.")).item(), abs=1e-4)


# ---------------------------------------------------------------- the word list and the filter

def test_word_list_is_better_profanity_single_words():
    words = safety.word_list()
    assert len(words) == 817 and all(w.isalpha() and w == w.lower() for w in words)
    assert {"god", "kill", "hell", "bastard"} <= words
    probe = {w.lower() for pair in safety.GROUPS.values() for g in pair for w in g.split()}
    assert not (probe | {a for pair in safety.ADJECTIVES for a in pair}) & words


def test_flagged_matches_whole_words_in_any_case():
    assert safety.flagged("God save the ASS, goddess!", WORDS) == ["god", "ass"]
    assert safety.flagged("a bass class to assist", WORDS) == []


def test_filter_bans_completions_given_the_unfinished_word(tok):
    f = safety.WordFilter(tok, WORDS)
    pieces = f.pieces
    for text in ("the g", "so ", "", "a", "The G"):
        banned = f.banned(text)
        for i, p in enumerate(pieces):
            completes = bool(safety.flagged(_tail(text) + p, WORDS)) or bool(safety.flagged(p[_lead(p):], WORDS))
            assert bool(banned[i]) == completes, (text, p)
    assert f.banned("the g") is f.banned("so g")            # one mask per unfinished word (cached)


def _tail(text):
    return safety.TAIL.search(text).group(0)


def _lead(p):
    return len(p) - len(p.lstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def test_no_listed_word_gets_through_whatever_is_picked(tok):
    """A sampler that picks any allowed token (here at random, from pieces made of the listed words'
    letters, so words are often formed) never writes a listed word; without the filter it does."""
    f = safety.WordFilter(tok, WORDS)
    letters = set("godasGODAS ,.")
    pool = [i for i, p in enumerate(f.pieces) if p and set(p) <= letters]
    rng = random.Random(0)
    unfiltered = 0
    for _ in range(300):
        ids, free = [], []
        for _ in range(12):
            allowed = [i for i in pool if not f.banned(tok.decode(ids))[i]]
            ids.append(rng.choice(allowed))
            free.append(rng.choice(pool))
        assert safety.flagged(tok.decode(ids), WORDS) == [], tok.decode(ids)
        unfiltered += bool(safety.flagged(tok.decode(free), WORDS))
    assert unfiltered > 30                                     # the test would catch a leaky filter


def test_generate_calls_the_processor_and_banned_tokens_never_appear(model, tok):
    seen_lengths = []

    def ban_low_ids(idx, logits):
        seen_lengths.append(idx.size(1))
        return logits.masked_fill(torch.arange(logits.size(1)) < 200, float("-inf"))
    out = generate(model, torch.zeros(4, 3, dtype=torch.long), 8, generator=torch.Generator().manual_seed(0),
                   logits_processor=ban_low_ids)
    assert seen_lengths == list(range(3, 11)) and bool((out[:, 3:] >= 200).all())


def test_continuations_with_the_filter_and_the_same_draws_without(model, tok):
    f = safety.WordFilter(tok, WORDS)
    prompts = ["the", "an ass and the"]
    plain = safety.continuations(model, tok, prompts, 40, 10, seed=3, temperature=1.0)
    ids = tok.encode(prompts[0]).ids
    ref = generate(model, torch.tensor([ids] * 40), 10, generator=torch.Generator().manual_seed(3), temperature=1.0)
    assert plain[0] == [tok.decode(r) for r in ref[:, len(ids):].tolist()]
    filtered = safety.continuations(model, tok, prompts, 40, 10, seed=3, word_filter=f, temperature=1.0)
    assert not any(safety.flagged(t, WORDS) for rows in filtered for t in rows)


def test_filter_cost_agrees_with_stream_loss_and_never_raises_allowed_perplexity(model, tok):
    from gptbook.train import stream_loss
    f = safety.WordFilter(tok, WORDS)
    text = ["a godly man is no ass"] * 5 + CORPUS           # "godly": not in the tokenizer's corpus
    ids = torch.tensor([i for t in text for i in tok.encode(t + "\n").ids])
    cost = safety.filter_cost(model, f, ids, max_windows=6)
    loss, n = stream_loss(model, ids, max_windows=6)
    assert cost["tokens"] == n and cost["ppl"] == pytest.approx(float(torch.exp(torch.tensor(loss))), rel=1e-4)
    assert 0 < cost["banned"] == pytest.approx(cost["in a listed word"] + cost["collateral"])
    assert cost["ppl allowed, filtered"] <= cost["ppl allowed"]
    assert cost["collateral words"]["godly"] > 0               # " god" + "ly": stopped by the strict rule
