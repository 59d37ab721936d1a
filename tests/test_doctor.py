"""`gptbook doctor` finds planted problems and prints the exact fix."""
import pytest
from packaging.specifiers import SpecifierSet

from gptbook.cli import doctor


def test_clean_machine_passes(capsys):
    checks = doctor.run_checks()
    failed = [c for c in checks if c.status == doctor.FAIL]
    assert failed == [], doctor.render(failed)
    assert doctor.main([]) == 0
    assert "checks passed" in capsys.readouterr().out


def test_wrong_python():
    c = doctor.check_python((3, 8, 10))
    assert c.status == doctor.FAIL and "3.10" in c.fix


def test_cuda_wheel_without_gpu_is_recognised():
    c = doctor.check_torch(version="2.13.0+cu128", cuda_build="12.8", gpu_available=False)
    assert c.status == doctor.WARN and "CUDA build" in c.detail and "whl/cpu" in c.fix


def test_wrong_torch_version():
    c = doctor.check_torch(version="2.4.1", cuda_build=None, gpu_available=False)
    assert c.status == doctor.FAIL and c.fix == "pip install torch==2.13.0"


def test_too_old_transformers_and_missing_package():
    reqs = [("transformers", SpecifierSet(">=5.0,<6")), ("seqeval", SpecifierSet(">=1.2.2"))]
    versions = {"transformers": "4.46.0", "seqeval": None}
    checks = doctor.check_dependencies(reqs, version_of=versions.get)
    assert checks[0].status == doctor.FAIL
    by = {c.name: c for c in checks[1:]}
    assert "too old" in by["transformers"].detail and by["transformers"].fix == "pip install 'transformers<6,>=5.0'"
    assert by["seqeval"].detail == "not installed"


def test_missing_widget_front_end(monkeypatch):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "jupyterlab_widgets":
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr(doctor.importlib, "import_module", lambda n: fake(n))
    rows = {c.name: c for c in doctor.check_jupyter()}
    assert rows["jupyterlab_widgets"].status == doctor.FAIL
    assert "Error displaying widget" in rows["jupyterlab_widgets"].detail


def test_offline_with_missing_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    c = doctor.check_data()
    assert c.status == doctor.FAIL and "offline mode" in c.detail
    assert c.fix.startswith("python -m gptbook data fetch ") and "shakespeare" in c.fix


def test_unwritable_cache(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("GPTBOOK_CACHE", str(ro / "sub"))
    c = doctor.check_cache()
    import os
    if os.geteuid() == 0:   # root can write anywhere: plant the failure differently
        monkeypatch.setattr(doctor.tempfile, "NamedTemporaryFile",
                            lambda **k: (_ for _ in ()).throw(PermissionError("read-only")))
        c = doctor.check_cache()
    assert c.status == doctor.FAIL and "GPTBOOK_CACHE" in c.fix


def _plant_uncreatable_cache(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path / "a_file" / "cache"))


def test_uncreatable_cache_is_a_failed_check_not_a_crash(tmp_path, monkeypatch):
    _plant_uncreatable_cache(tmp_path, monkeypatch)
    for check in (doctor.check_cache, doctor.check_data, doctor.check_models):
        c = check()
        assert c.status == doctor.FAIL and "GPTBOOK_CACHE" in c.fix, c


def test_cached_models_are_loaded(tmp_path, monkeypatch, tiny_model):
    from gptbook import train
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))
    c = doctor.check_models()
    assert c.status == doctor.OK and "none yet" in c.detail
    good, bad = tmp_path / "models" / "gpt-good.pt", tmp_path / "models" / "gpt-bad.pt"
    train.save_checkpoint(tiny_model, good)
    train.save_checkpoint(tiny_model, bad)
    assert doctor.check_models().status == doctor.OK
    bad.write_bytes(bad.read_bytes()[:2000])                                    # truncated
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "bpe-64-all.json").write_text("{ not json")    # corrupted
    c = doctor.check_models()
    assert c.status == doctor.FAIL and "2 of 3" in c.detail and "gpt-bad.pt" in c.detail
    assert f"rm '{bad}'" in c.fix and "bpe-64-all.json" in c.fix and "gpt-good" not in c.fix


@pytest.mark.slow
@pytest.mark.parametrize("command,plant", [(["doctor"], "uncreatable"), (["data", "verify"], "uncreatable"),
                                           (["serve", "--weights", "book"], "uncreatable"),   # the cached live model
                                           (["serve", "--weights", "book"], "corrupt"),
                                           (["doctor"], "corrupt")])
def test_cli_commands_print_cause_and_fix_not_a_traceback(command, plant, tmp_path):
    import os
    import subprocess
    import sys
    from gptbook import config, train
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if plant == "uncreatable":
        (tmp_path / "a_file").write_text("x")
        env["GPTBOOK_CACHE"] = str(tmp_path / "a_file" / "cache")
    else:                                   # the quick profile's cached GPT, truncated
        env["GPTBOOK_CACHE"] = str(tmp_path)
        cfg = config.get_profile("quick", seed=config.run_seed(None))
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / f"{train.pretrained_key(cfg)}.pt").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    res = subprocess.run([sys.executable, "-m", "gptbook", *command], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    text = res.stdout + res.stderr
    assert ("GPTBOOK_CACHE" if plant == "uncreatable" else "rm '") in text, text[-3000:]
    if command != ["doctor"]:
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr


def test_cjk_font_found_or_install_hint():
    from gptbook import viz
    assert viz.cjk_font({"DejaVu Sans", "Noto Sans CJK SC"}) == "Noto Sans CJK SC"
    assert viz.cjk_font({"DejaVu Sans"}) is None
    assert doctor.check_cjk_font(found="Noto Sans CJK SC").status == doctor.OK
    missing = doctor.check_cjk_font(found="")
    assert missing.status == doctor.WARN and "fonts-noto-cjk" in missing.fix


def test_shipped_model_checked(tmp_path):
    from gptbook.cli import doctor
    assert doctor.check_shipped().status == doctor.OK
    found = doctor.check_shipped(tmp_path)                    # an empty folder: nothing shipped
    assert found.status == doctor.FAIL and "git checkout -- gptbook/weights" in found.fix
