"""`recsys run` loads, while Prefect's temporary API boots, what its stages would load on
first use (:func:`recsys.stages.runner.warm_up`): the models' and backends' libraries, the
report's matplotlib and, where the run's similar items alone pass the size that uses it,
the compiled top-k selection, without deciding for the run's searches which selection
serves them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = (
    "import json, sys\n"
    "from recsys.config import PipelineConfig\n"
    "from recsys.index import exact\n"
    "from recsys.stages.runner import warm_up\n"
    "config = PipelineConfig.model_validate({'models': [{'name': 'als', 'type': 'als'}, "
    "{'name': 'pop', 'type': 'popular'}]})\n"
    "loaded = lambda: {m for m in ('implicit', 'matplotlib', 'matplotlib.backends.backend_agg', 'numba', "
    "'recsys.index.topk_kernel', 'hnswlib') if m in sys.modules}\n"
    "before = loaded()\n"
    "models = [m for m in config.models if m.name in sys.argv[2].split(',')]\n"
    "warm_up(config, models, int(sys.argv[1]))\n"
    "print(json.dumps({'before': sorted(before), 'after': sorted(loaded()), "
    "'compiled_decided': exact._small['compiled'], 'small_work': exact._small['work']}))\n"
)


def _warm(items: int, models: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(items), models], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("items, kernel", [(2_000, True), (1_000, False), (20_000, True)])
def test_warm_up_loads_what_the_run_will_use(items, kernel):
    # 2,000 items: 4M similar-item scores, past exact.SMALL_WORK (2M); 1,000 items: 1M
    result = _warm(items, "als,pop")
    assert result["before"] == []
    assert {"implicit", "matplotlib", "matplotlib.backends.backend_agg"} <= set(result["after"])
    assert ("recsys.index.topk_kernel" in result["after"]) is kernel
    assert ("numba" in result["after"]) is kernel
    # the index libraries only where auto may build an index (index.auto_min_items: 10,000)
    assert ("hnswlib" in result["after"]) is (items >= 10_000)
    # loading the kernel decides nothing: the run's searches still choose by their size
    assert result["compiled_decided"] is False and result["small_work"] == 0


def test_warm_up_loads_no_model_library_the_selected_models_do_not_use():
    result = _warm(100, "pop")
    assert "implicit" not in result["after"]
    assert "matplotlib.backends.backend_agg" in result["after"]
