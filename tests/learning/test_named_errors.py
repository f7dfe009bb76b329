"""The round's new inputs refuse bad values by name: algorithm parameters and clients' inputs."""
import numpy as np
import pytest

from fedsim.algorithms.feddyn import feddyn
from fedsim.algorithms.q_fedsgd import q_fedsgd
from fedsim.algorithms.qffl import qffl
from fedsim.algorithms.scaffold import scaffold
from fedsim.client import ClientInputs, ClientTask
from fedsim.execution import VectorizationError
from fedsim.execution.cohort_io import cohort_inputs_as_arrays
from fedsim.optimizers import SGD


@pytest.mark.parametrize("build, message", [
    (lambda: scaffold(0), r"scaffold needs population_size >= 1 .* got 0"),
    (lambda: scaffold(True), r"got True"),
    (lambda: scaffold(8, client_learning_rate=0.0), "client_learning_rate=0.0 must be > 0"),
    (lambda: feddyn(8, alpha=0.0), "alpha=0.0 must be > 0"),
    (lambda: feddyn(2.5), r"feddyn needs population_size >= 1 .* got 2.5"),
    (lambda: qffl(-1.0), "q=-1.0 must be >= 0"),
    (lambda: q_fedsgd(1.0, lipschitz=0.0), "lipschitz=0.0 must be > 0"),
    (lambda: ClientTask(SGD(0.1), proximal_mu=-0.5), "proximal_mu=-0.5 must be >= 0"),
])
def test_bad_algorithm_parameters_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_batched_inputs_stack_offsets_in_cohort_order():
    task = ClientTask(SGD(0.1), gradient_offset=True)
    inputs = [ClientInputs(gradient_offset=[np.full((2,), float(i)), np.array(i * 10.0)]) for i in range(3)]
    offsets, state = cohort_inputs_as_arrays(task, inputs)
    np.testing.assert_array_equal(offsets[0], [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(offsets[1], [0, 10, 20])
    assert state == ()


def test_inputs_the_task_does_not_declare_are_refused():
    inputs = [ClientInputs(gradient_offset=[np.zeros(2)])]
    with pytest.raises(VectorizationError, match="inputs their task does not declare"):
        cohort_inputs_as_arrays(ClientTask(SGD(0.1)), inputs)


def test_different_optimizer_states_in_one_cohort_are_refused():
    task = ClientTask(SGD(0.1, momentum=0.9), freeze_optimizer_state=True)
    inputs = [ClientInputs(optimizer_state={"momentum": (np.zeros(2),)}) for _ in range(2)]
    with pytest.raises(VectorizationError, match="broadcast one optimizer state"):
        cohort_inputs_as_arrays(task, inputs)
    shared = ClientInputs(optimizer_state={"momentum": (np.ones(2),)})
    assert cohort_inputs_as_arrays(task, [shared, shared]) == (None, shared.optimizer_state)
