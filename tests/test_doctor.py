"""`gptbook doctor` finds planted problems and prints the exact fix."""
from packaging.specifiers import SpecifierSet

from gptbook import doctor


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
