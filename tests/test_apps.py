"""Chapter 04 application code: embedder, retriever, monitor, recommender, prompting, sampling metrics."""
import math

import pytest
import torch

from gptbook.apps import monitor, recommend, retrieval
from gptbook.apps import prompting as apps
from gptbook.generate import generate
from gptbook.model import GPT, IGNORE_INDEX

FAQ = [("How do I reset my password?", "Use the 'forgot password' link.", "account"),
       ("How do I reset my password?", "Support can reset it for you.", "account"),
       ("What are your opening hours?", "We are open 9 to 5.", "shop"),
       ("Where is my order?", "Track it under 'My orders'.", "shop"),
       ("Can I pay by credit card?", "Yes, all major cards.", "payment")]


# ---------------------------------------------------------------- embeddings (MiniLM)

@pytest.fixture(scope="module")
def minilm():
    from gptbook import data
    from gptbook.apps import embed
    try:
        data.minilm_path()
    except data.DataMissing as e:
        pytest.skip(str(e))
    return embed


@pytest.mark.slow
def test_embed_unit_norm_and_meaning(minilm):
    v = minilm.embed(["How can I change my password?", "I forgot my password",
                      "The weather is lovely today"])
    assert v.shape == (3, 384)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2          # paraphrase closer than an unrelated sentence


@pytest.mark.slow
def test_embed_batching_does_not_change_vectors(minilm):
    texts = ["short", "a much longer sentence that needs padding in its batch", "third one"]
    torch.testing.assert_close(minilm.embed(texts, batch_size=1), minilm.embed(texts, batch_size=3),
                               atol=1e-5, rtol=1e-4)


def test_mean_pool_ignores_padding():
    from gptbook.mathx import mean_pool
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(h, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_embed_rejects_a_bare_string():
    from gptbook.apps.embed import embed
    with pytest.raises(TypeError):
        embed("not a list")


@pytest.mark.slow
def test_embedding_retriever_finds_paraphrase(minilm):
    faq = retrieval.build_faq(FAQ)
    r = retrieval.EmbeddingRetriever([e.question for e in faq])
    _, idx = retrieval.top_k(r.scores(["i can't remember my login password"]), 1)
    assert faq[int(idx[0, 0])].question == "How do I reset my password?"


# ---------------------------------------------------------------- retrieval

def test_build_faq_groups_answers():
    faq = retrieval.build_faq(FAQ)
    assert len(faq) == 4 and len(faq[0].answers) == 2
    assert [e.topic for e in retrieval.build_faq(FAQ, topics={"shop"})] == ["shop", "shop"]


def test_paraphrase_is_deterministic_and_different():
    p = retrieval.paraphrase("How do I fix this problem?", "english", seed=3)
    assert p == retrieval.paraphrase("How do I fix this problem?", "english", seed=3)
    assert "repair" in p and "issue" in p and "?" not in p
    assert "您" in retrieval.paraphrase("你好吗?", "chinese", seed=0)
    with pytest.raises(ValueError):
        retrieval.paraphrase("x", "french")


def test_tfidf_recall_and_same_question():
    faq = retrieval.build_faq(FAQ)
    r = retrieval.TfidfRetriever([e.question for e in faq])
    queries = ["reset password", "opening hours", "pay credit card"]
    _, idx = retrieval.top_k(r.scores(queries), 2)
    assert retrieval.recall_at_k(idx, [0, 1, 3], 1) == 1.0
    assert retrieval.recall_at_k(idx, [1, 0, 3], 1) == pytest.approx(1 / 3)
    dup = retrieval.build_faq(FAQ + [("how do I reset my password", "x", "account")])
    eq = retrieval.same_question(dup)
    assert eq[0, 4] and not eq[0, 1]


def test_chinese_tfidf_uses_characters():
    r = retrieval.TfidfRetriever(["你叫什么名字", "今天天气很好"], "chinese")
    assert r.scores(["您叫啥名字"]).argmax().item() == 0


def test_threshold_curve_and_pick():
    rows = retrieval.threshold_curve([0.9, 0.8, 0.6, 0.3], [1, 1, 0, 0], [0.0, 0.5, 0.7])
    assert [r["coverage"] for r in rows] == [1.0, 0.75, 0.5]
    assert [r["precision"] for r in rows] == [0.5, pytest.approx(2 / 3), 1.0]
    assert retrieval.pick_threshold(rows, 0.9) == 0.7
    with pytest.raises(ValueError):
        retrieval.pick_threshold(rows[:1], 0.9)


def test_assistant_hands_off_below_threshold():
    faq = retrieval.build_faq(FAQ)
    bot = retrieval.Assistant(faq, retrieval.TfidfRetriever([e.question for e in faq]), threshold=0.3)
    r = bot("where is my order")
    assert not r.handed_off and r.text == "Track it under 'My orders'."
    r = bot("tell me about quantum gravity")
    assert r.handed_off and r.text == retrieval.HANDOFF
    with pytest.raises(ValueError):
        bot("  ")


def test_assistant_generates_with_a_gpt(tiny_config):
    class CharTok:                       # the tokenizers.Tokenizer interface the Assistant uses
        def encode(self, s):
            return type("E", (), {"ids": [ord(c) % 64 for c in s]})()

        def decode(self, ids):
            return "".join(chr(97 + i % 26) for i in ids)
    faq = retrieval.build_faq(FAQ)
    prompt = retrieval.rag_prompt(faq, [0, 1], "reset?")
    assert prompt.startswith("Q: How do I reset") and prompt.endswith("Q: reset?\nA:")
    bot = retrieval.Assistant(faq, retrieval.TfidfRetriever([e.question for e in faq]), 0.1,
                              model=GPT(tiny_config), tokenizer=CharTok(), max_new_tokens=6)
    r = bot("where is my order")
    assert not r.handed_off and len(r.text) <= 6 and "\n" not in r.text


def test_token_f1():
    assert retrieval.token_f1("We are open 9 to 5.", "we are open 9 to 5") == 1.0
    assert retrieval.token_f1("open late", "closed") == 0.0
    assert retrieval.token_f1("open 9", "open 9 to 5") == pytest.approx(2 * 1 * 0.5 / 1.5)


# ---------------------------------------------------------------- monitoring

ROWS = [(f"t{i}", 2 if i % 5 else 0, 0.0) for i in range(400)]   # 20% negative background


def test_make_stream_injects_segments():
    s = monitor.make_stream(ROWS, length=200, n_segments=2, segment_len=20, neg_share=1.0, seed=1)
    assert len(s.texts) == 200 and len(s.segments) == 2
    for a, b in s.segments:
        assert all(l == 0 for l in s.labels[a:b])
    assert int(s.injected.sum()) == 40
    assert s.segments == monitor.make_stream(ROWS, 200, 2, 20, 1.0, seed=1).segments
    with pytest.raises(ValueError):
        monitor.make_stream(ROWS, 100, 3, 20)
    s = monitor.make_stream(ROWS, length=200, n_segments=2, segment_len=20, neg_share=0.75, seed=2)
    assert [sum(l == 0 for l in s.labels[a:b]) for a, b in s.segments] == [15, 15]   # exactly 75%
    assert len(set(s.texts)) == 200                                                # no text repeats
    with pytest.raises(ValueError, match="unused negative"):      # 3 x 20 negatives, only 40 after the stream
        monitor.make_stream(ROWS, length=200, n_segments=3, segment_len=20, neg_share=1.0)


def test_split_rows_is_stratified_disjoint_and_shuffled():
    train, held = monitor.split_rows(ROWS, train_share=0.4, seed=3)
    assert len(train) == 160 and len(held) == 240
    assert not {r[0] for r in train} & {r[0] for r in held}
    assert sum(r[1] == 0 for r in train) == 32 and sum(r[1] == 0 for r in held) == 48   # 20% in both
    assert held == monitor.split_rows(ROWS, 0.4, seed=3)[1]                           # reproducible
    assert held != sorted(held, key=lambda r: int(r[0][1:]))                          # arrival order shuffled
    assert held != monitor.split_rows(ROWS, 0.4, seed=4)[1]
    with pytest.raises(ValueError):
        monitor.split_rows(ROWS, 1.0, seed=0)


def test_rolling_share_matches_naive():
    flags = torch.rand(50, generator=torch.Generator().manual_seed(0)) < 0.3
    got = monitor.rolling_share(flags, 7)
    naive = [flags[max(0, i - 6):i + 1].float().mean().item() for i in range(50)]
    torch.testing.assert_close(got, torch.tensor(naive))


def test_alerts_and_counts():
    share = torch.tensor([0.1, 0.2, 0.6, 0.7, 0.2, 0.1, 0.8, 0.3, 0.1, 0.1])
    on = monitor.alert_onsets(share, 0.5, window=2)
    assert on == [2, 6]
    assert monitor.alert_onsets(share, 0.5, window=5) == [6]       # nothing before a full window
    c = monitor.alarm_counts(on, [(1, 3), (8, 9)], window=2)
    assert c == {"alerts": 2, "detected": 1, "missed": 1, "false_alarms": 1, "mean_delay": 1.0}
    rows = monitor.sweep([0, 0, 1, 1, 1, 0, 0, 0], [(2, 5)], 2, [0.5, 0.99])
    assert rows[0]["detected"] == 1 and rows[0]["false_alarms"] == 0


def test_rearm_level_stops_a_burst_of_alerts():
    share = torch.tensor([0.1, 0.1, 0.6, 0.45, 0.6, 0.45, 0.6, 0.2, 0.6, 0.1])   # wobbles around 0.5
    assert monitor.alert_onsets(share, 0.5, window=1) == [2, 4, 6, 8]
    assert monitor.alert_onsets(share, 0.5, window=1, rearm=0.3) == [2, 8]        # re-armed only at 0.2
    assert monitor.alert_onsets(share, 0.5, window=1, rearm=0.5) == [2, 4, 6, 8]
    with pytest.raises(ValueError):
        monitor.alert_onsets(share, 0.5, window=1, rearm=0.6)
    rows = monitor.sweep(share, [(2, 7)], 1, [0.5], rearm=0.3)      # window 1: the rolling share is `share`
    assert rows[0]["alerts"] == 2 and rows[0]["detected"] == 1 and rows[0]["false_alarms"] == 1


def test_calibrated_threshold_catches_a_surge_without_seeing_it():
    # empirical: the rolling share of an alternating calm period never moves, so the threshold is its mean
    assert monitor.calibrated_threshold([1, 0] * 50, window=10, k=3, spread="empirical") == 0.5
    # binomial: p = 0.5, standard deviation sqrt(0.25 / 10) = 0.158 -> 0.5 + 3 * 0.158
    assert monitor.calibrated_threshold([1, 0] * 50, window=10, k=3) == 0.97
    assert monitor.calibrated_threshold([0] * 11 + [1] * 9, window=10, k=2) == round(0.45 + 2 * (0.2475 / 10) ** 0.5, 2)
    with pytest.raises(ValueError, match="spread"):
        monitor.calibrated_threshold([1, 0] * 50, window=10, spread="quantile")
    g = torch.Generator().manual_seed(0)
    calm = torch.rand(400, generator=g) < 0.3                  # a calm period: 30% negative
    t = monitor.calibrated_threshold(calm, window=30, k=3)
    assert 0.3 < t < 0.7
    flags = torch.rand(600, generator=g) < 0.3
    flags[300:360] = torch.rand(60, generator=g) < 0.9         # a surge the threshold never saw
    on = monitor.alert_onsets(monitor.rolling_share(flags, 30), t, 30)
    c = monitor.alarm_counts(on, [(300, 360)], 30)
    assert c["detected"] == 1 and c["false_alarms"] == 0
    with pytest.raises(ValueError):
        monitor.calibrated_threshold([0] * 10, window=10)


def test_run_monitor_sets_the_threshold_on_calm_data_only():
    g = torch.Generator().manual_seed(1)
    calm = torch.rand(600, generator=g) < 0.25
    flags = torch.rand(1000, generator=g) < 0.25
    segments = [(150, 210), (400, 460), (650, 710), (880, 940)]
    for a, b in segments:
        flags[a:b] = torch.rand(b - a, generator=g) < 0.8
    r = monitor.run_monitor(flags, calm, segments, window=50, k=3)
    assert r["threshold"] == monitor.calibrated_threshold(calm, 50, 3)       # from the calm flags alone
    assert r["calm share"] == pytest.approx(calm.float().mean().item())
    assert r["detected"] == 4 and r["false_alarms"] == 0 and r["alerts"] == len(r["onsets"]) == 4
    # a classifier that calls everything negative: a threshold above 1 that never fires
    none = monitor.run_monitor(torch.ones(1000, dtype=torch.bool), torch.ones(600, dtype=torch.bool), segments, 50)
    assert none["threshold"] == 1.0 and none["detected"] == 0


def test_tfidf_classifier_learns_words_from_its_training_texts():
    texts = ["i love this", "so happy today", "great day", "love it", "what a great game",
             "i hate this", "so sad today", "awful day", "hate it", "what an awful game"] * 3
    labels = [2] * 5 + [0] * 5
    clf = monitor.TfidfClassifier(texts, labels * 3)
    pred = clf.predict(["i love today", "i hate today"])
    assert pred.dtype == torch.long and pred.tolist() == [2, 0]


class CharTok:
    """The tokenizers.Tokenizer interface tasks.encode and the pooling use: one id per character."""
    def encode(self, s):
        return type("E", (), {"ids": [ord(c) % 60 + 2 for c in s]})()

    def token_to_id(self, t):
        return {"<|pad|>": 0, "<|endoftext|>": 1}[t]


def test_gpt_classifier_is_fine_tuned_once_then_cached(tmp_path, monkeypatch, tiny_config):
    from gptbook import config, train
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))
    torch.manual_seed(0)
    monkeypatch.setattr(train, "pretrained", lambda cfg, progress=True: (GPT(tiny_config).eval(), CharTok(), None))
    cfg = config.get_profile("quick", finetune_steps=2, finetune_batch_size=4, block_size=16)
    texts, labels = ["good", "bad", "fine", "awful"] * 3, [2, 0, 1, 0] * 3
    m1, tok, h1 = monitor.gpt_classifier(cfg, texts, labels)
    assert len(h1.steps) == 2 and len(list((tmp_path / "models").glob("monitor-*.pt"))) == 1
    m2, _, h2 = monitor.gpt_classifier(cfg, texts, labels)                 # loaded, not trained again
    assert h2.train_loss == h1.train_loss
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    monitor.gpt_classifier(cfg, texts, labels[::-1])                        # other labels: another file
    assert len(list((tmp_path / "models").glob("monitor-*.pt"))) == 2
    pred = monitor.predict_gpt(m2, tok, ["good", "a much longer text", "bad"], max_len=16)
    assert pred.shape == (3,) and set(pred.tolist()) <= {0, 1, 2}
    single = torch.cat([monitor.predict_gpt(m2, tok, [t], max_len=16) for t in ["good", "a much longer text", "bad"]])
    assert torch.equal(pred, single)                  # sorted by length inside, returned in input order
# ---------------------------------------------------------------- recommendation

def test_synthetic_users_prefer_their_topic():
    topics = ["a"] * 20 + ["b"] * 20 + ["c"] * 20
    u = recommend.synthetic_users(topics, n_users=30, n_interactions=8, p_liked=1.0, seed=0)
    assert len(u.histories) == 30 and all(len(h) == 7 for h in u.histories)
    for h, t, like in zip(u.histories, u.held_out, u.liked_topics):
        assert len(set(h + [t])) == 8 and {topics[i] for i in h + [t]} == set(like)
    with pytest.raises(ValueError):
        recommend.synthetic_users(topics, 2, 1)


def test_similarity_beats_popularity_on_topic_users():
    topics = ["a"] * 30 + ["b"] * 30
    vecs = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0]] * 30 + [[0.0, 1.0]] * 30)
                                         + 0.01 * torch.randn(60, 2), dim=1)
    u = recommend.synthetic_users(topics, 40, 6, p_liked=1.0, seed=1)
    sim = recommend.recommend_similar(vecs, u.histories, 30)
    pop = recommend.recommend_popular(60, u.histories, 30)
    for h, r in zip(u.histories, sim.tolist()):
        assert not set(h) & set(r)                       # never recommends what was seen
    assert recommend.hit_rate(sim, u.held_out, 30) == 1.0   # all of the liked topic fits in k=30
    assert recommend.hit_rate(pop, u.held_out, 30) < 1.0


def test_hit_rate():
    recs = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert recommend.hit_rate(recs, [3, 9], 3) == 0.5
    assert recommend.hit_rate(recs, [3, 9], 2) == 0.0
    assert recommend.hits(recs, [3, 4], 1).tolist() == [False, True]


def test_compare_is_a_paired_difference():
    a = torch.tensor([[1], [2], [3], [4]])           # hits users 0, 1, 2
    b = torch.tensor([[1], [0], [0], [4]])           # hits user 0
    held = [1, 2, 3, 9]
    gap, se = recommend.compare(a, b, held, 1)
    d = torch.tensor([0.0, 1.0, 1.0, 0.0])
    assert gap == pytest.approx(0.5) and se == pytest.approx((d.std() / 2).item())
    assert recommend.compare(a, a, held, 1) == (0.0, 0.0)          # same lists: no difference, no noise


def test_gpt_item_vectors_pool_center_and_recommend(tiny_config):
    torch.manual_seed(0)
    gpt = GPT(tiny_config.replace(vocab_size=64)).train()
    topics = ["a"] * 12 + ["b"] * 12
    texts = [("ab" if t == "a" else "yz") * (2 + i % 5) for i, t in enumerate(topics)]   # 4 to 12 characters
    v = recommend.gpt_item_vectors(gpt, CharTok(), texts, batch_size=5)
    assert v.shape == (24, 32) and gpt.training                   # unit rows; the model's mode is restored
    torch.testing.assert_close(v.norm(dim=1), torch.ones(24))
    whole = recommend.gpt_item_vectors(gpt, CharTok(), texts, batch_size=24)     # padding does not matter
    torch.testing.assert_close(v, whole, atol=1e-5, rtol=1e-4)
    raw = recommend.gpt_item_vectors(gpt, CharTok(), texts, center=False)
    assert (raw @ raw.T).mean() > (v @ v.T).mean()                 # centring removes the shared direction
    u = recommend.synthetic_users(topics, 40, 6, p_liked=1.0, seed=2)
    sim = recommend.recommend_similar(v, u.histories, 5)
    pop = recommend.recommend_popular(24, u.histories, 5)
    assert recommend.hit_rate(sim, u.held_out, 5) > recommend.hit_rate(pop, u.held_out, 5)


# ---------------------------------------------------------------- prompting and sampling metrics

def test_worked_steps_and_parse():
    assert apps.worked(47, 38) == "47+38:7+8=15,4+3+1=8,=85"
    assert apps.worked(99, 1) == "99+1:9+1=10,9+0+1=10,=100"
    assert apps.parse_answer("7+8=15,4+3+1=8,=85;3+4=7") == 85
    assert apps.parse_answer("=12\n5+5=10") == 12
    assert apps.parse_answer("7+8=1x") is None
    assert apps.decode(apps.encode("12+3=15;")) == "12+3=15;"
    with pytest.raises(ValueError):
        apps.encode("1 + 2")


def test_corpus_excludes_held_out_pairs():
    text = apps.arithmetic_corpus(300, seed=0)
    lines = text.splitlines()
    assert len(lines) == 300 and {len(l.split(";")) for l in lines} == set(range(1, 9))
    for ex in text.replace("\n", ";").split(";"):
        if ex:
            a, b = ex.split("=")[0].split(":")[0].split("+")
            assert not apps.held_out(int(a), int(b))
            assert int(ex.rsplit("=", 1)[1]) == int(a) + int(b)
    assert apps.few_shot_prompt((3, 4), [(1, 2)], steps=False) == "1+2=3;3+4="


def test_answer_targets_keep_only_answers():
    text = "12+3=15;4+5:4+5=9,=9\n"
    kept = "".join(c for c, t in zip(text, apps.answer_targets(text).tolist()) if t != IGNORE_INDEX)
    assert kept == "15;" + "4+5=9,=9\n"
    ids = apps.answer_targets(text)
    assert ids[5].item() == apps.encode("1")[0] and ids[4].item() == IGNORE_INDEX   # '1' kept, '=' not


def test_few_shot_questions_are_unseen_and_paired():
    qs = apps.few_shot_questions(2, True, 50, digits=2, seed=3)
    for prompt, (a, b) in qs:
        assert apps.held_out(a, b) and 10 <= min(a, b) and max(a, b) <= 99
        assert prompt.endswith(f";{a}+{b}:") and prompt.count(";") == 2
        for shot in prompt.split(";")[:-1]:
            x, y = map(int, shot.split(":")[0].split("+"))
            assert not apps.held_out(x, y) and shot == apps.worked(x, y)
    direct = apps.few_shot_questions(2, False, 50, digits=2, seed=3)
    zero = apps.few_shot_questions(0, True, 50, digits=2, seed=3)
    assert [q for _, q in direct] == [q for _, q in zero] == [q for _, q in qs]   # same questions
    first_shots = [p.split(";")[0].split("=")[0] for p, _ in direct]
    assert first_shots == [p.split(";")[0].split(":")[0] for p, _ in qs]       # same shots
    assert all(max(q) >= 100 for _, q in apps.few_shot_questions(1, False, 20, digits=3))


@pytest.mark.slow
def test_pretraining_beats_an_untrained_model():
    from gptbook import config
    cfg = config.get_profile("quick", eval_interval=1000, eval_iters=1)
    torch.manual_seed(cfg.seed)
    untrained = GPT(cfg.model_config(vocab_size=len(apps.VOCAB), **apps.ARITH_MODEL)).eval()
    trained, hist = apps.pretrain_arithmetic(cfg, 150)
    text = "\n" + "".join(apps.example(a, b, s) + ";" for _, (a, b) in
                          apps.few_shot_questions(0, True, 3, seed=1) for s in (False, True))
    x = torch.tensor([apps.encode(text[:-1])])
    y = apps.answer_targets(text)[1:][None]                        # the answers of held-out pairs
    with torch.no_grad():
        loss = {name: m(x, y).loss.item() for name, m in (("untrained", untrained), ("trained", trained))}
    assert loss["trained"] < 0.65 * loss["untrained"]
    assert len(hist.steps) == 150 and hist.val_loss[-1] < hist.val_loss[0]


def test_arithmetic_gpt_is_cached(tmp_path, monkeypatch):
    from gptbook import config
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))
    cfg = config.get_profile("quick", arith_steps=2, eval_interval=1, eval_iters=1)
    m1, h1 = apps.arithmetic_gpt(cfg)
    m2, h2 = apps.arithmetic_gpt(cfg)                   # second call loads the checkpoint
    assert len(h1.steps) == 2 and h2.train_loss == h1.train_loss
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_few_shot_accuracy_runs_on_a_tiny_model(tiny_config):
    model = GPT(tiny_config.replace(vocab_size=len(apps.VOCAB), block_size=64)).eval()
    acc = apps.few_shot_accuracy(model, n_shots=1, steps=False, n_questions=5, seed=0)
    assert 0.0 <= acc <= 1.0
    ids = torch.tensor([apps.prompt_ids("3+4=")])                 # complete = generate, slice, decode
    new = generate(model, ids, 5, temperature=0.0)[0, ids.size(1):].tolist()
    assert apps.complete(model, "3+4=", max_new_tokens=5) == apps.first_example(apps.decode(new))
    with pytest.raises(ValueError):                   # 4 worked shots do not fit in 64 characters
        apps.few_shot_accuracy(model, n_shots=4, steps=True, n_questions=2)


def test_distinct_n():
    assert apps.distinct_n([[1, 2, 3, 4]], 1) == 1.0
    assert apps.distinct_n([[1, 1, 1, 1]], 2) == pytest.approx(1 / 3)
    assert apps.distinct_n([[1]], 2) == 0.0


def test_continuation_nll_matches_loss(tiny_config):
    model = GPT(tiny_config).eval()
    idx = torch.randint(0, 64, (2, 10))
    nll = apps.continuation_nll(model, idx, start=1)   # everything after the first token
    loss = model(idx[:, :-1], idx[:, 1:]).loss
    assert nll.mean().item() == pytest.approx(loss.item(), rel=1e-5)


def test_sampling_grid_greedy_is_low_diversity(tiny_config):
    model = GPT(tiny_config).eval()
    rows = apps.sampling_grid(model, [[1, 2, 3]], [{"temperature": 0.0}, {"temperature": 2.0}],
                              max_new_tokens=10, n_samples=4, seed=0)
    assert rows[0]["distinct-1"] <= 10 / 40 + 1e-9     # greedy: 4 identical samples
    assert rows[1]["distinct-2"] > rows[0]["distinct-2"]
    assert all(math.isfinite(r["perplexity"]) for r in rows)
