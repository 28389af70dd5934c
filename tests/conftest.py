import os

import pytest

# Notebooks run on the kernelspec installed into the venv, whatever else is installed.
os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")


@pytest.fixture(scope="session")
def smoke_bench(tmp_path_factory):
    from wsda_lib.core.config import preset
    from wsda_lib.data import load

    return load(preset("smoke").data, tmp_path_factory.mktemp("data"), verbose=False)


@pytest.fixture
def gta_root(tmp_path):
    """Three GTA5 image/label pairs (tests/real_trees.py formats)."""
    from real_trees import palette_label, rgb

    for i in range(3):
        rgb(tmp_path / f"images/{i:05d}.png")
        palette_label(tmp_path / f"labels/{i:05d}.png", [7, 8, 26, 0, 33, 1])
    return tmp_path


@pytest.fixture
def gloo_port(monkeypatch):
    """A free local port in WSDA_TEST_PORT, where the gloo ranks a test spawns meet."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("WSDA_TEST_PORT", str(s.getsockname()[1]))
