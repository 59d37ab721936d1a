"""Chapter 04 widgets: real ipywidgets when asked, printed fallback when headless."""
import pytest

from gptbook.apps import widgets


def test_headless_chat_prints_transcript(capsys, monkeypatch):
    monkeypatch.delenv("GPTBOOK_INTERACTIVE", raising=False)
    log = widgets.chat_box(str.upper, demo=["hi?", "bye"])
    assert log == [("hi?", "HI?"), ("bye", "BYE")]
    assert "user: hi?\nbot:  HI?" in capsys.readouterr().out


def test_env_var_switches_widgets_on(monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("GPTBOOK_INTERACTIVE", "1")
    assert widgets.use_widgets() is True
    assert widgets.use_widgets(False) is False


def test_interactive_chat_box_answers():
    ipw = pytest.importorskip("ipywidgets")
    box = widgets.chat_box(str.upper, interactive=True)
    assert isinstance(box, ipw.VBox)
    text = box.children[1].children[0]
    text.value = "hello"                         # what pressing Enter does
    assert text.value == ""                      # sent and cleared


def test_chat_callback_writes_only_into_its_output_widget(capsys):
    """JupyterLab logs a callback's stray output in its log console: the exchange, and whatever the
    assistant prints or warns, must land in the Output widget's state, not on stdout/stderr."""
    pytest.importorskip("ipywidgets")
    import warnings

    def noisy(q):
        print("debug: scoring", q)
        warnings.warn("a library warning")
        return q.upper()
    box = widgets.chat_box(noisy, interactive=True)
    text, send = box.children[1].children
    out = box.children[2]
    text.value = "hello"                         # Enter
    text.value = "again"
    send.click()                                 # the box is empty now: nothing more is sent
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    stdout = "".join(o["text"] for o in out.outputs if o.get("name") == "stdout")
    assert stdout == "user: hello\nbot:  HELLO\n\nuser: again\nbot:  AGAIN\n\n"
    stderr = "".join(o["text"] for o in out.outputs if o.get("name") == "stderr")
    assert "debug: scoring hello" in stderr and "a library warning" in stderr


def test_chat_callback_shows_an_error_instead_of_raising(capsys):
    pytest.importorskip("ipywidgets")

    def broken(q):
        raise RuntimeError("index not loaded")
    box = widgets.chat_box(broken, interactive=True)
    box.children[1].children[0].value = "hi"
    assert capsys.readouterr().err == ""
    assert "RuntimeError: index not loaded" in "".join(o["text"] for o in box.children[2].outputs)


def test_english_only_chat_says_so_for_a_chinese_question(capsys, monkeypatch):
    monkeypatch.delenv("GPTBOOK_INTERACTIVE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    handoff = lambda q: "I don't know - handing you to a human colleague."   # noqa: E731
    log = widgets.chat_box(handoff, demo=["how do u work", "你好吗？"], english_only=True)
    assert log[0][1] == handoff("")                          # English: the reply as it was
    assert widgets.ENGLISH_ONLY in log[1][1] and log[1][1].startswith(handoff(""))
    assert widgets.has_cjk("今天") and widgets.has_cjk("こんにちは") and not widgets.has_cjk("café, naïve")
    ipw = pytest.importorskip("ipywidgets")
    box = widgets.chat_box(handoff, interactive=True, english_only=True)
    assert "English questions only" in box.children[0].value   # said in the widget before anyone asks
    box.children[1].children[0].value = "我的电脑会中毒吗"
    assert "English questions only" in "".join(o["text"] for o in box.children[2].outputs)
    assert isinstance(box, ipw.VBox)


def test_sampling_panel_headless_shows_the_prompt_then_the_continuation(capsys):
    seen = {}

    def sample(prompt, **kw):
        seen.update(kw)
        return "the continuation"
    assert widgets.sampling_panel(sample, "ROMEO:\n", {"top_k": 5}, interactive=False) == "the continuation"
    out = capsys.readouterr().out
    assert seen["top_k"] == 5
    assert "prompt: 'ROMEO:\\n'" in out                     # the newline, visibly
    assert out.endswith("---\nROMEO:\nthe continuation\n")     # not starting mid-token


def test_sampling_panel_labels_are_readable_and_it_shows_the_prompt(capsys):
    ipw = pytest.importorskip("ipywidgets")
    seen = {}

    def sample(prompt, **kw):
        seen.update(kw)
        print("sampling...")                     # must not reach JupyterLab's log console
        return " <b>art</b> thou"
    panel = widgets.sampling_panel(sample, "ROMEO:\n", {"top_k": 0}, interactive=True)
    sliders = [c for c in panel.children if isinstance(c, (ipw.FloatSlider, ipw.IntSlider))]
    assert {s.description for s in sliders} == {"temperature", "top_k (0 = off)", "top_p", "repetition_penalty"}
    for c in [*sliders, panel.controls["prompt"]]:
        assert c.style.description_width == "initial"    # JupyterLab cut fixed-width labels: `temperat…`
    assert isinstance(panel.controls["prompt"], ipw.Textarea)   # a one-line Text hides the newline
    panel.button.click()
    assert seen["top_k"] is None                          # 0 = off
    html = panel.output.value
    assert "<b" in html and "ROMEO:" in html and "↵" in html          # the prompt, bold, newline drawn
    assert html.index("ROMEO:") < html.index("art")                    # then its continuation
    assert "&lt;b&gt;art&lt;/b&gt; thou" in html                        # model text is escaped
    assert "sampling..." in html and capsys.readouterr().out == ""


def test_widgets_on_in_a_jupyter_started_kernel_off_under_executors(monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.delenv("GPTBOOK_INTERACTIVE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert widgets.use_widgets() is False                 # papermill, nbval, a script
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/reader/chapters/04_applications.ipynb")
    assert widgets.use_widgets() is True                  # JupyterLab started this kernel
    monkeypatch.setenv("GPTBOOK_INTERACTIVE", "0")
    assert widgets.use_widgets() is False                 # the override wins
