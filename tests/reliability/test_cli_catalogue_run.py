"""A catalogue of bad run directories, custom model functions and initial weights, through the CLI
(issue 18, items 3, 4 and 7): each probe ends with exit code 2, fedsim's own error type, a message
naming the bad value and the fix, and every file that existed before it byte for byte as it was.

One probe per function: it builds its bad input under a fresh temporary directory and returns a
:class:`Case`. Add a probe when you add an error.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from fedsim import cli
from fedsim.experiment.build_model import CustomModelError, InitialWeightsError, OutputWidthError
from fedsim.experiment.lock import LOCK_NAME, RunDirectoryLocked, RunDirectoryUnwritable, lock_run_dir
from fedsim.experiment.preflight import AllowModuleError, UntrustedModuleError, UntrustedRunError
from fedsim.experiment.resume_checks import RoundsError
from fedsim.experiment import early
from fedsim.experiment.run import (
    RunDirectoryError,
    RunDirectoryIsAFileError,
    RunOutputsExistError,
    RunOutputTypeError,
)

CONFIG = """\
rounds = {rounds}
seed = 1
[data]
name = "synthetic"
num_devices = 4
[model]
{model}
[sampler]
cohort_size = 2
[evaluation]
every = 0
[checkpoint]
every = 2
keep = 2
[logging]
tensorboard = false
"""
LOGREG = 'name = "logreg"'

MODELS = '''\
import keras


def _dense(units):
    return keras.Sequential([keras.Input((60,)), keras.layers.Dense(units)])


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def raises():
    raise RuntimeError("boom")


def one_tuple():
    return (_dense(10),)


def nothing():
    return None


def bare():
    return _dense(10)


def no_model():
    return "not a model", _loss()


def string_loss():
    return _dense(10), "sparse_categorical_crossentropy"


def narrow():
    return _dense(3), _loss()


def build(hidden):
    return _dense(hidden), _loss()
'''


@dataclasses.dataclass
class Case:
    argv: list[str]
    error: type[BaseException]
    says: list[str]  # each in the message: the bad value, and the fix
    absent: list[Path] = dataclasses.field(default_factory=list)  # must not exist afterwards


@dataclasses.dataclass
class Probe:
    """What a probe builds its input with: a fresh folder, monkeypatch, and the finished run to copy."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    finished: Path
    stack: contextlib.ExitStack

    def config(self, model: str = LOGREG, rounds: int = 1) -> str:
        path = self.tmp / "run.toml"
        path.write_text(CONFIG.format(model=model, rounds=rounds), encoding="utf-8")
        return str(path)

    def custom(self, function: str, params: str = "{}") -> str:
        (self.tmp / "catalogue_models.py").write_text(MODELS, encoding="utf-8")
        # This probe's own copy, not one an earlier probe imported from its folder.
        self.monkeypatch.delitem(sys.modules, "catalogue_models", raising=False)
        return self.config(f'name = "custom"\nfunction = "catalogue_models:{function}"\nparams = {params}')

    def weights(self, name: str, content: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(content)
        return self.config(f'name = "logreg"\ninitial_weights = "{path}"')

    def run(self, config: str, out: Path, *extra: str) -> list[str]:
        return ["run", config, "--out", str(out), "--quiet", *extra]

    def finished_copy(self) -> Path:
        return Path(shutil.copytree(self.finished, self.tmp / "finished"))

    def folder(self, name: str, **files: str) -> Path:
        path = self.tmp / name
        path.mkdir()
        for file_name, text in files.items():
            (path / file_name).write_text(text)
        return path


PROBES: dict[str, Callable[[Probe], Case]] = {}


def probe(function: Callable[[Probe], Case]) -> Callable[[Probe], Case]:
    PROBES[function.__name__] = function
    return function


# Run directories --------------------------------------------------------------------------
@probe
def out_is_a_file(p: Probe) -> Case:
    target = p.tmp / "results.csv"
    target.write_text("a,b\n")
    return Case(p.run(p.config(), target), RunDirectoryIsAFileError,
                [f"the run directory '{target}' is an existing file", "choose another --out"])


@probe
def out_under_a_file(p: Probe) -> Case:
    target = p.tmp / "results.csv"
    target.write_text("a,b\n")
    return Case(p.run(p.config(), target / "run"), RunDirectoryIsAFileError,
                [f"'{target / 'run'}'", "a folder on its path is a file", "choose another --out"])


@probe
def full_disk_at_start(p: Probe) -> Case:
    out = p.folder("out", **{"notes.txt": "mine"})
    real_fsync = os.fsync

    def full(fd: int) -> None:  # the disk fills as config.toml is written
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    p.monkeypatch.setattr(os, "fsync", full)
    return Case(p.run(p.config(), out), RunDirectoryUnwritable,
                [f"cannot write the run's config '{out / 'config.toml'}': No space left on device",
                 "free disk space"],
                absent=[out / "config.toml", out / ".config.toml.fedsim-tmp", out / "metrics.jsonl"])


@probe
def read_only_run_directory(p: Probe) -> Case:
    out = p.folder("out", **{"notes.txt": "mine"})
    out.chmod(0o500)
    p.stack.callback(out.chmod, 0o755)
    if os.access(out, os.W_OK):  # root: permissions do not stop it, so the kernel's answer is simulated
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if Path(path).parent == out and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kwargs)

        p.monkeypatch.setattr(os, "open", read_only)
    return Case(p.run(p.config(), out), RunDirectoryUnwritable,
                [f"cannot create the lock file '{out / '.fedsim.lock'}': Permission denied", "permissions"],
                absent=[out / "config.toml"])


@probe
def tensorboard_is_a_file(p: Probe) -> Case:
    out = p.folder("out", tensorboard="my notes")
    return Case(p.run(p.config(), out), RunOutputTypeError,
                [f"'{out / 'tensorboard'}' is a file, where a run writes its TensorBoard events folder",
                 "move or rename it"], absent=[out / "config.toml"])


@probe
def run_log_is_a_folder(p: Probe) -> Case:
    out = p.folder("out")
    (out / "run.log").mkdir()
    (out / "run.log" / "keep.txt").write_text("mine")
    return Case(p.run(p.config(), out), RunOutputTypeError,
                [f"'{out / 'run.log'}' is a folder, where a run writes its log file"], absent=[out / "config.toml"])


@probe
def config_toml_is_a_folder_even_with_overwrite(p: Probe) -> Case:
    out = p.folder("out")
    (out / "config.toml").mkdir()
    (out / "config.toml" / "keep.txt").write_text("mine")
    return Case(p.run(p.config(), out, "--overwrite"), RunOutputTypeError,
                [f"'{out / 'config.toml'}' is a folder", "not even with --overwrite"])


@probe
def checkpoints_is_a_file(p: Probe) -> Case:
    out = p.folder("out", checkpoints="not a folder")
    return Case(p.run(p.config(), out), RunOutputTypeError,
                [f"'{out / 'checkpoints'}' is a file, where a run writes its checkpoints folder"])


@probe
def out_holds_the_users_config_toml(p: Probe) -> Case:
    out = p.folder("out", **{"config.toml": "# mine\nrounds = 3\n", "notes.txt": "mine"})
    return Case(p.run(p.config(), out), RunOutputsExistError,
                [f"'{out}' already holds a run's files (config.toml)", "--overwrite"])


@probe
def out_holds_only_an_older_runs_checkpoints(p: Probe) -> Case:
    out = p.folder("out")
    shutil.copytree(p.finished / "checkpoints", out / "checkpoints")
    return Case(p.run(p.config(), out), RunOutputsExistError,
                [f"'{out}' already holds a run's files (checkpoints/)", "--overwrite"])


@probe
def out_holds_a_finished_run(p: Probe) -> Case:
    out = p.finished_copy()
    return Case(p.run(p.config(), out), RunOutputsExistError,
                ["already holds a run's files (config.toml, metrics.jsonl, summary.json, run.log, checkpoints/)",
                 f"fedsim resume {out}"])


@probe
def overwrite_would_remove_the_config_being_run(p: Probe) -> Case:
    out = p.folder("out")
    config = out / "config.toml"
    config.write_text(CONFIG.format(model=LOGREG, rounds=1) + "# my comments\n")
    return Case(p.run(str(config), out, "--overwrite"), RunDirectoryError,
                [f"--overwrite would remove '{config}', the config this command runs"])


@probe
def overwrite_of_a_directory_in_use(p: Probe) -> Case:
    out = p.finished_copy()
    p.stack.enter_context(lock_run_dir(out))
    return Case(p.run(p.config(), out, "--overwrite"), RunDirectoryLocked,
                [f"'{out}' is in use by another fedsim process (pid {os.getpid()}"])


# Custom model functions -------------------------------------------------------------------------
def _custom_case(p: Probe, function: str, error: type, says: list[str], params: str = "{}") -> Case:
    out = p.tmp / "out"
    return Case(p.run(p.custom(function, params), out), error,
                [f"model.function 'catalogue_models:{function}'", *says], absent=[out / "metrics.jsonl"])


@probe
def custom_function_raises(p: Probe) -> Case:
    return _custom_case(p, "raises", CustomModelError, ["raised RuntimeError: boom", "run.log"])


@probe
def custom_function_returns_a_one_tuple(p: Probe) -> Case:
    return _custom_case(p, "one_tuple", CustomModelError,
                        ["returned a tuple of 1 (Sequential)", "return (keras_model, loss)"])


@probe
def custom_function_returns_none(p: Probe) -> Case:
    return _custom_case(p, "nothing", CustomModelError, ["returned NoneType", "(keras_model, loss)"])


@probe
def custom_function_returns_a_bare_keras_model(p: Probe) -> Case:
    return _custom_case(p, "bare", CustomModelError, ["returned a bare Keras model; return (model, loss)"])


@probe
def custom_function_returns_no_model_in_its_tuple(p: Probe) -> Case:
    return _custom_case(p, "no_model", CustomModelError, ["returned a tuple of 2 (str, SparseCategoricalCrossentropy)"])


@probe
def custom_function_loss_is_a_string(p: Probe) -> Case:
    return _custom_case(p, "string_loss", CustomModelError,
                        ["cannot wrap", "got 'sparse_categorical_crossentropy'", "keras.losses"])


@probe
def custom_model_narrower_than_the_classes(p: Probe) -> Case:
    return _custom_case(p, "narrow", OutputWidthError,
                        ["a model with 3 outputs, but the data has 10 classes", "keras.layers.Dense(10)"])


@probe
def custom_function_unexpected_params(p: Probe) -> Case:
    return _custom_case(p, "build", CustomModelError,
                        ["raised TypeError", "'width'", "model.params {'width': 3}"], params="{ width = 3 }")


# Damaged initial weights ---------------------------------------------------------------------------
def _npz() -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, np.zeros((60, 10), np.float32), np.zeros(10, np.float32))
    return buffer.getvalue()


def _weights_case(p: Probe, name: str, content: bytes, says: list[str]) -> Case:
    out = p.tmp / "out"
    return Case(p.run(p.weights(name, content), out), InitialWeightsError,
                [f"model.initial_weights='{p.tmp / name}'", *says], absent=[out / "metrics.jsonl"])


@probe
def initial_weights_empty_file(p: Probe) -> Case:
    return _weights_case(p, "empty.npz", b"", ["not a readable .npz archive", "np.savez(path, *arrays)"])


@probe
def initial_weights_truncated(p: Probe) -> Case:
    content = _npz()
    return _weights_case(p, "truncated.npz", content[: len(content) // 2], ["not a readable .npz archive", "np.savez"])


@probe
def initial_weights_bad_crc(p: Probe) -> Case:
    content = bytearray(_npz())
    (p.tmp / "probe.npz").write_bytes(content)
    with zipfile.ZipFile(p.tmp / "probe.npz") as archive:
        member = archive.infolist()[0]
    # Inside the first array's values: past the zip entry's local header and the .npy header.
    content[member.header_offset + 30 + len(member.filename) + len(member.extra) + 300] ^= 0xFF
    return _weights_case(p, "crc.npz", bytes(content), ["Bad CRC-32 for file 'arr_0.npy'", "damaged"])


@probe
def initial_weights_npy_renamed_npz(p: Probe) -> Case:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((60, 10), np.float32))
    return _weights_case(p, "single.npz", buffer.getvalue(), ["a single array (a .npy file)", "np.savez"])


@probe
def initial_weights_members_not_npy(p: Probe) -> Case:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return _weights_case(p, "notes.npz", buffer.getvalue(), ["member 'notes.txt' is not a .npy array", "np.savez"])


# Resume ------------------------------------------------------------------------------------------
@probe
def resume_rounds_zero(p: Probe) -> Case:
    return Case(["resume", str(p.finished_copy()), "--rounds", "0", "--quiet"], RoundsError,
                ["--rounds 0: a run has at least 1 round"])


@probe
def resume_rounds_negative(p: Probe) -> Case:
    return Case(["resume", str(p.finished_copy()), "--rounds", "-3", "--quiet"], RoundsError,
                ["--rounds -3: a run has at least 1 round"])


@probe
def resume_rounds_below_the_checkpoint(p: Probe) -> Case:
    return Case(["resume", str(p.finished_copy()), "--rounds", "1", "--quiet"], RoundsError,
                ["--rounds 1 is fewer than the 4 rounds", "--rounds 4 or more"])


@probe
def resume_a_custom_function_without_trust(p: Probe) -> Case:
    run_dir = p.finished_copy()
    (p.tmp / "catalogue_models.py").write_text(MODELS)
    config = (run_dir / "config.toml").read_text()
    (run_dir / "config.toml").write_text(config.replace(
        '[model]\nname = "logreg"', f'[model]\nname = "custom"\nfunction = "catalogue_models:bare"\n'
                                    f'module_dir = "{p.tmp}"'))
    return Case(["resume", str(run_dir), "--quiet"], UntrustedRunError,
                ["names the custom model function 'catalogue_models:bare'", "--trust",
                 "--allow-module catalogue_models"])


@probe
def resume_a_standard_library_function_with_trust_only(p: Probe) -> Case:
    run_dir = p.folder("received")
    (run_dir / "config.toml").write_text(CONFIG.format(
        model=f'name = "custom"\nfunction = "os:system"\nparams = {{ command = "touch {p.tmp / "ran"}" }}',
        rounds=1))
    return Case(["resume", str(run_dir), "--quiet", "--trust"], UntrustedModuleError,
                ["model.function='os:system'", "--allow-module os"], absent=[p.tmp / "ran"])


@probe
def resume_a_directory_that_is_no_run(p: Probe) -> Case:
    run_dir = p.folder("empty", **{"notes.txt": "mine"})
    return Case(["resume", str(run_dir), "--quiet"], RunDirectoryError,
                [f"'{run_dir}' is not a run directory (no config.toml)"])


# Code a config may not run -------------------------------------------------------------------------
def _stdlib_case(p: Probe, function: str, params: str = "{}", *extra: str) -> Case:
    module = function.partition(":")[0]
    config = p.config(f'name = "custom"\nfunction = "{function}"\nparams = {params}')
    return Case(p.run(config, p.tmp / "out", *extra), UntrustedModuleError,
                [f"model.function={function!r}", f"--allow-module {module}"],
                absent=[p.tmp / "out", p.tmp / "ran"])


@probe
def run_os_system(p: Probe) -> Case:
    return _stdlib_case(p, "os:system", f'{{ command = "touch {p.tmp / "ran"}" }}')


@probe
def run_subprocess_run(p: Probe) -> Case:
    return _stdlib_case(p, "subprocess:run", f'{{ args = ["touch", "{p.tmp / "ran"}"] }}')


@probe
def run_builtins_exec(p: Probe) -> Case:
    return _stdlib_case(p, "builtins:exec", f'{{ source = "open(\'{p.tmp / "ran"}\', \'w\')" }}')


@probe
def run_os_system_allowing_another_module(p: Probe) -> Case:
    return _stdlib_case(p, "os:system", f'{{ command = "touch {p.tmp / "ran"}" }}', "--allow-module", "shutil")


@probe
def allow_module_that_is_no_module_name(p: Probe) -> Case:
    config = p.config('name = "custom"\nfunction = "os:system"')
    return Case(p.run(config, p.tmp / "out", "--allow-module", "os:system"), AllowModuleError,
                ["--allow-module 'os:system': give a module name", "--allow-module os"], absent=[p.tmp / "out"])


@probe
def sweep_os_system(p: Probe) -> Case:
    config = p.config(f'name = "custom"\nfunction = "os:system"\nparams = {{ command = "touch {p.tmp / "ran"}" }}')
    return Case(["sweep", config, "--grid", "seed=1,2", "--out", str(p.tmp / "sweep"), "--quiet"],
                UntrustedModuleError, ["model.function='os:system'", "--allow-module os"],
                absent=[p.tmp / "sweep", p.tmp / "ran"])


# The test ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 4-round run (checkpoints at rounds 2 and 4), copied by the probes that need one."""
    folder = tmp_path_factory.mktemp("catalogue")
    config = folder / "run.toml"
    config.write_text(CONFIG.format(model=LOGREG, rounds=4), encoding="utf-8")
    assert cli.main(["run", str(config), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but lock files (a probe may hold one while it runs)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def _intact(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    """Files changed or lost; a log may only have grown (a failure appended to run.log)."""
    return [name for name, content in before.items()
            if not (after.get(name) == content
                    or (name.endswith("run.log") and (after.get(name) or b"").startswith(content)))]


def test_the_catalogue_has_enough_probes():
    assert len(PROBES) >= 25


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_ends_with_a_named_error_and_keeps_what_was_there(name, tmp_path, monkeypatch, capsys, finished_run):
    raised: list[BaseException] = []

    def spying(call):  # records the error the CLI turned into its message
        def spy(*args) -> None:
            try:
                call(*args)
            except BaseException as error:
                raised.append(error)
                raise

        return spy

    # The checks before TensorFlow starts (fedsim.experiment.early), then the command itself.
    monkeypatch.setattr(early, "check_early", spying(early.check_early))
    monkeypatch.setattr(cli, "_dispatch", spying(cli._dispatch))
    with contextlib.ExitStack() as stack:
        case = PROBES[name](Probe(tmp_path, monkeypatch, finished_run, stack))
        before = snapshot(tmp_path)
        code = cli.main(case.argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fedsim: error: ") and "Traceback" not in err, err
    assert len(raised) == 1 and isinstance(raised[0], case.error), repr(raised)
    for text in case.says:
        assert text in err, f"{text!r} not in {err!r}"
    assert _intact(before, snapshot(tmp_path)) == []
    missing: Optional[Path] = next((path for path in case.absent if path.exists()), None)
    assert missing is None, f"{missing} exists"
