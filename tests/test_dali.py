"""The optional DALI loader (pipeline/dali.py): when DALI cannot be imported, dali_available says so with the install
command. (Its batches are checked beside the other loaders' in tests/test_loaders.py, where DALI is installed.)"""
from pipeline.dali import dali_available


def test_dali_missing_is_reported_with_the_install_command(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("nvidia.dali"):
            raise ImportError("No module named 'nvidia.dali'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    ok, why = dali_available()
    assert not ok and "pip install" in why and "nvidia-dali-cuda130" in why
