"""Aggregators: combine client deltas into one server delta (see ``base``).

Rules aggregate on their own (means, robust rules, the privacy mechanisms
DP-FedAvg, DP-FTRL and distributed DP, secure aggregation); wrappers transform client values and hand them to an ``inner``
aggregator (clipping, zeroing, compression, attacks). ``build_aggregator``
composes a chain from config.
"""

from fedsim.aggregators.attacks import ByzantineAttack
from fedsim.aggregators.base import (
    AggregationError,
    AggregationOutput,
    Aggregator,
    check_client_values,
    weighted_sum,
)
from fedsim.aggregators.bulyan import Bulyan
from fedsim.aggregators.clipping import Clipping
from fedsim.aggregators.coordinatewise import CoordinateMedian, TrimmedMean
from fedsim.aggregators.distributed_dp import DistributedDP
from fedsim.aggregators.dp_fedavg import DPFedAvg
from fedsim.aggregators.dp_ftrl import DPFTRL
from fedsim.aggregators.factory import build_aggregator
from fedsim.aggregators.geometric_median import GeometricMedian
from fedsim.aggregators.krum import Krum
from fedsim.aggregators.mean import MeanAggregator
from fedsim.aggregators.quantization import StochasticQuantization
from fedsim.aggregators.rotation import RandomRotation
from fedsim.aggregators.secure_aggregation import SecureAggregation
from fedsim.aggregators.sparsification import TopKSparsification
from fedsim.aggregators.validation import AggregatorConfigError
from fedsim.aggregators.zeroing import Zeroing

__all__ = [
    "AggregationError",
    "AggregationOutput",
    "Aggregator",
    "AggregatorConfigError",
    "Bulyan",
    "ByzantineAttack",
    "Clipping",
    "CoordinateMedian",
    "DPFTRL",
    "DPFedAvg",
    "DistributedDP",
    "GeometricMedian",
    "Krum",
    "MeanAggregator",
    "RandomRotation",
    "SecureAggregation",
    "StochasticQuantization",
    "TopKSparsification",
    "TrimmedMean",
    "Zeroing",
    "build_aggregator",
    "check_client_values",
    "weighted_sum",
]
