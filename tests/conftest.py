import os

import pytest

# Tests run in the smoke preset on the CPU; keep BLAS from oversubscribing the 2 cores.
os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")


@pytest.fixture(scope="session")
def smoke_bench(tmp_path_factory):
    from wsda_lib.config import preset
    from wsda_lib.data.benchmark import load_benchmark

    return load_benchmark(preset("smoke").data, tmp_path_factory.mktemp("data"), verbose=False)
