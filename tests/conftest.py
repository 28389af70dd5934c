import os

import pytest

# Notebooks run on the kernelspec installed into the venv, whatever else is installed.
os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")


@pytest.fixture(scope="session")
def smoke_bench(tmp_path_factory):
    from wsda_lib.config import preset
    from wsda_lib.data import load

    return load(preset("smoke").data, tmp_path_factory.mktemp("data"), verbose=False)
