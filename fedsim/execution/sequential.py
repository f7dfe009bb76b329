"""The simple executor: clients one after another, in this process."""

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # the learning package builds executors; avoid an import cycle
    import tensorflow as tf

    from fedsim.learning.client_work import ClientOutput, ClientWork
    from fedsim.models.model_weights import ModelWeights


class SequentialExecutor:
    """Runs each client's work in turn with one compiled ``ClientWork``."""

    name = "sequential"

    def __init__(self, client_work: "ClientWork"):
        self.client_work = client_work

    def train(self, model_weights: "ModelWeights", datasets: Sequence["tf.data.Dataset"]) -> list["ClientOutput"]:
        return [self.client_work.train(model_weights, dataset) for dataset in datasets]

    def evaluate(self, model_weights: "ModelWeights", datasets: Sequence["tf.data.Dataset"]) -> list:
        return [self.client_work.evaluate(model_weights, dataset) for dataset in datasets]
