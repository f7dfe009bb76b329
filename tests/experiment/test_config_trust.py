"""A config cannot run code by surprise (issue 18, item 3): standard-library model functions need
``--allow-module``, and resuming a run directory that calls a custom function needs ``--trust``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fedsim.cli import main
from fedsim.experiment import EXPECTED_ERRORS, config_from_dict, run_experiment
from fedsim.experiment.preflight import (
    AllowModuleError,
    UntrustedModuleError,
    UntrustedRunError,
    check_config,
    check_resume_trust,
)

CONFIG = """\
rounds = {rounds}
[data]
name = "synthetic"
num_devices = 4
[model]
name = "custom"
function = "{function}"
params = {params}
[sampler]
cohort_size = 2
[evaluation]
every = 0
[checkpoint]
every = 1
[logging]
tensorboard = false
"""

# A model module of the user's own, next to the config; each call leaves a line in calls.txt.
USER_MODULE = """\
from pathlib import Path

import keras

def build(hidden):
    with open(Path(__file__).with_name("calls.txt"), "a") as calls:
        calls.write("built\\n")
    model = keras.Sequential([keras.Input((60,)), keras.layers.Dense(hidden), keras.layers.Dense(10)])
    return model, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
"""


def write_config(folder: Path, function: str, params: str = "{}", rounds: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.toml"
    path.write_text(CONFIG.format(function=function, params=params, rounds=rounds), encoding="utf-8")
    return path


def custom(function: str) -> dict:
    return {"rounds": 1, "data": {"name": "synthetic", "num_devices": 4}, "sampler": {"cohort_size": 2},
            "model": {"name": "custom", "function": function}}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_refusals_are_expected_errors():
    for error in (UntrustedModuleError, UntrustedRunError, AllowModuleError):
        assert issubclass(error, EXPECTED_ERRORS)  # exit code 2 through the CLI


def test_os_system_is_refused_on_run_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "ran.txt"
    config = write_config(tmp_path, "os:system", f"{{ command = 'touch {marker}' }}")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.function='os:system'" in err and "--allow-module os" in err and "Traceback" not in err
    assert not marker.exists()
    assert not out.exists()  # refused before the run directory is made


@pytest.mark.parametrize("function", ["subprocess:run", "builtins:exec", "os.path:join", "shutil:rmtree"])
def test_other_standard_library_and_builtin_functions_are_refused(tmp_path, function):
    module = function.partition(":")[0]
    with pytest.raises(UntrustedModuleError, match=rf"'{function}'.*--allow-module {module}\b"):
        run_experiment(config_from_dict(custom(function)), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_allowing_a_module_lets_its_function_be_called(tmp_path, capsys):
    # os.getcwd is harmless and returns no model: the call happened, and failed by name.
    config = write_config(tmp_path, "os:getcwd")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--allow-module", "os"]) == 2
    err = capsys.readouterr().err
    assert "model.function 'os:getcwd' returned str" in err
    assert not (out / "metrics.jsonl").exists()


def test_allowing_a_package_allows_its_submodules_only():
    check_config(config_from_dict(custom("os.path:join")), allow_modules=["os"])
    check_config(config_from_dict(custom("os.path:join")), allow_modules=["os.path"])
    with pytest.raises(UntrustedModuleError, match="'os:system'"):
        check_config(config_from_dict(custom("os:system")), allow_modules=["os.path"])


@pytest.mark.parametrize("value", ["os:system", "", "os/path", "1os"])
def test_an_allow_module_value_that_is_not_a_module_name_is_named(tmp_path, capsys, value):
    config = write_config(tmp_path, "os:system")
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--allow-module", value]) == 2
    assert f"--allow-module {value!r}: give a module name" in capsys.readouterr().err


def test_one_name_given_as_a_string_is_refused_in_python():
    with pytest.raises(AllowModuleError, match=r"allow_modules='os': give a list"):
        check_config(config_from_dict(custom("os:system")), allow_modules="os")


def test_a_user_module_next_to_the_config_runs_and_resume_asks_for_trust(tmp_path, monkeypatch, capsys):
    study = tmp_path / "study"
    config = write_config(study, "trust_study_models:build", "{ hidden = 3 }", rounds=2)
    (study / "trust_study_models.py").write_text(USER_MODULE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the config's folder: found next to the config
    monkeypatch.delitem(sys.modules, "trust_study_models", raising=False)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    calls = (study / "calls.txt").read_text()
    before = snapshot(out)

    assert main(["resume", str(out), "--rounds", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'trust_study_models:build'" in err and "--trust" in err
    assert "--allow-module trust_study_models" in err and str(study.resolve()) in err
    assert snapshot(out) == before  # nothing in the run directory changed
    assert (study / "calls.txt").read_text() == calls  # and the function never ran

    assert main(["resume", str(out), "--rounds", "3", "--quiet", "--trust"]) == 0
    assert main(["resume", str(out), "--rounds", "4", "--quiet", "--allow-module", "trust_study_models"]) == 0
    rounds = [json.loads(line)["round"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3, 4]


def test_resume_with_trust_still_needs_the_allow_flag_for_a_standard_library_function(tmp_path, capsys):
    # A received run directory whose config.toml calls os:system: trusting the directory is not enough.
    marker = tmp_path / "ran.txt"
    run_dir = tmp_path / "received"
    write_config(run_dir, "os:system", f"{{ command = 'touch {marker}' }}").rename(run_dir / "config.toml")
    before = snapshot(run_dir)
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    assert "'os:system'" in capsys.readouterr().err
    assert main(["resume", str(run_dir), "--quiet", "--trust"]) == 2
    assert "--allow-module os" in capsys.readouterr().err
    assert not marker.exists() and snapshot(run_dir) == before


def test_check_resume_trust_passes_a_config_without_custom_code(tmp_path):
    plain = config_from_dict({"rounds": 1, "data": {"name": "synthetic"}, "model": {"name": "logreg"}})
    check_resume_trust(plain.model, tmp_path / "config.toml", trust=False)
    with pytest.raises(UntrustedRunError, match="'my_models:build'.*--trust"):
        check_resume_trust(config_from_dict(custom("my_models:build")).model, tmp_path / "config.toml", trust=False)


def test_sweep_refuses_a_standard_library_function_before_any_point_runs(tmp_path, capsys):
    config = write_config(tmp_path, "os:system", f"{{ command = 'touch {tmp_path / 'ran.txt'}' }}")
    out = tmp_path / "sweep"
    assert main(["sweep", str(config), "--grid", "seed=1,2", "--out", str(out), "--quiet"]) == 2
    assert "--allow-module os" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "ran.txt").exists()


@pytest.mark.parametrize("function, package", [
    ("pytest:main", "pytest"),            # an installed tool's entry point: it runs what its arguments say
    ("fedsim.cli:main", "fedsim"),        # fedsim itself would start another run with other flags
    ("numpy.lib.npyio:load", "numpy"),    # any installed package, even a harmless one
])
def test_modules_outside_the_config_folder_and_working_directory_need_allowing(tmp_path, capsys, function, package):
    marker = tmp_path / "ran.txt"
    config = write_config(tmp_path, function, f"{{ args = ['--version', '{marker}'] }}")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"model.function={function!r} calls into" in err
    assert f"--allow-module {package}" in err
    assert not out.exists() and not marker.exists()
    check_config(config_from_dict(custom(function)), allow_modules=[package])  # allowed: the gate opens


def test_a_module_of_ones_own_in_the_working_directory_needs_no_flag(tmp_path, monkeypatch):
    (tmp_path / "cwd_models_t18.py").write_text(USER_MODULE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    check_config(config_from_dict(custom("cwd_models_t18:build")))
    with pytest.raises(UntrustedModuleError, match="cwd_models_t18"):
        # The same module reached from elsewhere is an installed one: allowed only by name.
        monkeypatch.chdir(tmp_path.parent)
        monkeypatch.syspath_prepend(str(tmp_path))
        check_config(config_from_dict(custom("cwd_models_t18:build")))
