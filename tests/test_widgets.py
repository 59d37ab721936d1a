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


def test_sampling_panel_headless_and_interactive(capsys):
    seen = {}

    def sample(prompt, **kw):
        seen.update(kw)
        return prompt + "!"
    assert widgets.sampling_panel(sample, "abc", {"top_k": 5}, interactive=False) == "abc!"
    assert seen["top_k"] == 5 and "abc!" in capsys.readouterr().out
    ipw = pytest.importorskip("ipywidgets")
    assert isinstance(widgets.sampling_panel(sample, "abc", interactive=True), ipw.interactive)


def test_widgets_on_in_a_jupyter_started_kernel_off_under_executors(monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.delenv("GPTBOOK_INTERACTIVE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert widgets.use_widgets() is False                 # papermill, nbval, a script
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/reader/chapters/04_applications.ipynb")
    assert widgets.use_widgets() is True                  # JupyterLab started this kernel
    monkeypatch.setenv("GPTBOOK_INTERACTIVE", "0")
    assert widgets.use_widgets() is False                 # the override wins
