"""fedsim's default thread setting (fedsim.runtime)."""
import json
import os
import subprocess
import sys

import pytest

from fedsim import runtime


@pytest.mark.parametrize("cores, threads", [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (16, 8), (64, 32)])
def test_each_op_gets_the_cores_shared_by_the_clients_in_flight(cores, threads):
    assert runtime.CLIENTS_IN_FLIGHT == 2
    assert runtime.default_intra_op_threads(cores) == threads


@pytest.mark.parametrize("cores", [0, -2, 1.5, True, "4"])
def test_bad_core_counts_are_refused_by_value(cores):
    with pytest.raises(ValueError, match=f"cores={cores!r} must be a positive int"):
        runtime.default_intra_op_threads(cores)


def test_the_default_fills_only_an_unset_variable():
    environ = {}
    assert runtime.apply_default_threads(environ, modules={}) is True
    assert environ == {"TF_NUM_INTRAOP_THREADS": str(runtime.default_intra_op_threads())}
    for chosen in ("0", "3"):  # 0 is TensorFlow's own default; the user's choice stays
        environ = {"TF_NUM_INTRAOP_THREADS": chosen}
        assert runtime.apply_default_threads(environ, modules={}) is False
        assert environ == {"TF_NUM_INTRAOP_THREADS": chosen}


def _after_import(before: str, environ: dict) -> list:
    """Runs ``before``, then imports fedsim, in a fresh interpreter; returns what it found."""
    code = (f"{before}\nimport json, os, fedsim, fedsim.runtime as r, tensorflow as tf\n"
            "print(json.dumps([os.environ.get('TF_NUM_INTRAOP_THREADS'), r.default_intra_op_threads(), "
            "tf.config.threading.get_intra_op_parallelism_threads()]))")
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


UNSET = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"}


def test_import_fedsim_sets_the_default_before_tensorflow_starts():
    value, default, _ = _after_import("", UNSET)
    assert value == str(default)  # TensorFlow reads it when it starts
    # Imported but not started: set through tf.config as well.
    value, default, configured = _after_import("import tensorflow as tf", UNSET)
    assert value == str(default) and configured == default


def test_import_fedsim_leaves_a_users_choice_and_a_started_tensorflow_alone():
    assert _after_import("", {**UNSET, "TF_NUM_INTRAOP_THREADS": "0"})[0] == "0"
    chosen = "import tensorflow as tf; tf.config.threading.set_intra_op_parallelism_threads(3)"
    assert _after_import(chosen, UNSET)[0::2] == [None, 3]
    started = "import tensorflow as tf; tf.constant(1.0) + 1.0"  # pools fixed: nothing to claim
    assert _after_import(started, UNSET)[0::2] == [None, 0]


def test_thread_settings_report_the_environment_and_tensorflow():
    import tensorflow as tf

    settings = runtime.thread_settings()
    assert settings["cores"] == runtime.schedulable_cores() == len(os.sched_getaffinity(0))
    assert settings["TF_NUM_INTRAOP_THREADS"] == os.environ.get("TF_NUM_INTRAOP_THREADS")
    assert settings["tf_config_intra_op_threads"] == tf.config.threading.get_intra_op_parallelism_threads()
    json.dumps(settings)  # goes into summary.json
