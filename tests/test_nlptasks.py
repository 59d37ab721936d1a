"""Chapter 04 §7: the listed tasks' data splits, baselines and metrics (topic classification, QA,
extractive summarisation with ROUGE)."""
import numpy as np
import pytest
import torch

from gptbook import data, tokenizer
from gptbook.apps import nlptasks
from gptbook.finetune.tasks import normalize
from gptbook.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    corpus = ["Q: what is your name?\nA: I am a bot.", "Q: do you like tea?\nA: Yes, I like tea."] * 30
    return tokenizer.train_bpe(corpus, vocab_size=300, path=tmp_path_factory.mktemp("tok") / "t.json")


@pytest.fixture
def model(tok):
    return GPT(GPTConfig(vocab_size=tok.get_vocab_size(), block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()


def test_topic_split_is_fixed_clean_and_keeps_tested_topics():
    pairs = data.load_dialogues("english")
    train, test, topics = nlptasks.topic_split(pairs)
    assert (train, test, topics) == nlptasks.topic_split(pairs)          # no seed of the run in it
    assert all(sum(y == i for _, y in test) >= 5 for i in range(len(topics)))   # every kept topic is tested
    assert not {normalize(t) for t, _ in train} & {normalize(t) for t, _ in test}


def test_topic_split_puts_no_question_on_both_sides():
    from gptbook.finetune.tasks import question_split, shared_questions
    train, held = question_split(data.load_dialogues("english"), 0.3, 0)
    assert not shared_questions(train, held)


def test_majority_and_probe():
    assert nlptasks.majority([2, 1, 2, 0], 3).tolist() == [2, 2, 2]
    g = np.random.default_rng(0)
    X = np.concatenate([g.normal(0, 1, (50, 4)), g.normal(3, 1, (50, 4))]) * [1, 100, 1e-3, 1]   # wild scales
    y = [0] * 50 + [1] * 50
    p = nlptasks.Probe(X, y)
    assert (p.predict(X) == torch.tensor(y)).float().mean() > 0.9
    assert p.predict_proba(X).shape == (100, 2)


def test_exact_match_and_f1():
    assert nlptasks.exact_match("I am a bot!", ["i am a bot", "No."]) == 1.0
    assert nlptasks.exact_match("I am a bot, really", ["i am a bot"]) == 0.0
    assert nlptasks.best_f1("a bot", ["I am a bot", "tea"]) == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_rerank_picks_the_highest_pmi_candidate(model, tok):
    qs, cands = ["what is your name?", "do you like tea?"], [["I am a bot.", "Yes."], ["Yes, I like tea.", "No."]]
    got = nlptasks.rerank(model, tok, qs, cands)
    for q, cs, g in zip(qs, cands, got):
        from gptbook.finetune.tasks import dialogue_format
        lp = nlptasks.continuation_logprobs(model, tok, [dialogue_format(q)] * 2, [" " + c for c in cs])
        lp0 = nlptasks.continuation_logprobs(model, tok, [dialogue_format("")] * 2, [" " + c for c in cs])
        assert g == cs[int((lp - lp0).argmax())]


def test_continuation_logprobs_crops_a_long_context(model, tok):
    long = "Q: what is your name? " * 40                                      # far beyond 32 tokens
    v = nlptasks.continuation_logprobs(model, tok, [long], [" I am a bot."])
    assert torch.isfinite(v).all() and v.item() < 0


def test_extractive_pickers():
    assert nlptasks.lead(10, 3) == [0, 1, 2] and nlptasks.lead(2, 3) == [0, 1]
    r = nlptasks.random_pick(10, 3, seed=1)
    assert r == sorted(r) and len(set(r)) == 3 and r == nlptasks.random_pick(10, 3, seed=1)
    assert nlptasks.top_k([0.1, 0.9, 0.5, 0.8], 2) == [1, 3]                # document order, not score order
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert int(nlptasks.centroid_scores(v).argmax()) == 2                   # the sentence most like the whole
    from scipy.sparse import csr_matrix
    torch.testing.assert_close(nlptasks.centroid_scores(csr_matrix(v)), nlptasks.centroid_scores(v))


def test_by_document_splits_and_checks_lengths():
    docs = [{"sentences": ["a", "b"]}, {"sentences": ["c"]}]
    assert [list(x) for x in nlptasks.by_document(np.arange(3), docs)] == [[0, 1], [2]]
    with pytest.raises(ValueError):
        nlptasks.by_document([1, 2], docs)


def test_rouge_and_summary_rows():
    r = nlptasks.rouge(["the cat sat on the mat", "dogs bark"], ["the cat sat on the mat", "a cat sat"])
    assert r["ROUGE-1"].tolist() == [1.0, 0.0] and r["ROUGE-2"][0] == 1.0 and r["ROUGE-L"][0] == 1.0
    docs = [{"sentences": ["The cat sat.", "It rained."], "summary": "the cats sat"}]
    texts, scores = nlptasks.summary_rows(docs, {"lead-1": [[0]], "second": [[1]]})
    assert texts["lead-1"] == ["The cat sat."]
    assert scores["lead-1"]["ROUGE-1"][0] == 1.0 and scores["second"]["ROUGE-1"][0] == 0.0   # stemmed: cats = cat


def test_load_aclsum():
    try:
        docs = data.load_aclsum("test")
    except data.DataMissing as e:
        pytest.skip(str(e))
    assert len(docs) == 100 and len(data.load_aclsum("train")) == 100 and len(data.load_aclsum("val")) == 50
    assert all(len(d["highlights"]) == len(d["sentences"]) and d["summary"] for d in docs)
    with pytest.raises(ValueError):
        data.load_aclsum("dev")
