"""DP-FTRL: clipped sums released as tree-aggregated private prefix sums, no sampling needed.

Kairouz, McMahan, Song, Thakkar, Thakurta, Xu, "Practical and Private (Deep)
Learning without Sampling or Shuffling", ICML 2021 (Algorithm 1, Appendix D).

Round ``t`` of a tree: each participating client value is clipped to C, the
clipped values are summed (``x_t``), and the tree mechanism
(``fedsim.privacy.tree_aggregation``, per-node noise N(0, (z C)**2) per
coordinate) releases the noisy prefix sum ``s_t = x_1 + ... + x_t + n_t``. The
result is the *residual* ``(s_t - s_{t-1}) / m`` (``m``: expected cohort size),
as in TensorFlow Privacy's ``TreeResidualSumQuery``, so server SGD with learning
rate eta on these results gives DP-FTRL's ``theta_t = theta_0 + eta * s_t / m``
(plain SGD only: a momentum or adaptive server optimizer is still private,
post-processing, but it is not the paper's DP-FTRLM).

Restarts (every ``restart_every`` rounds; default the sampler's epoch, N // m
for round robin): the tree starts afresh and the model at the restart is the
new ``theta_0``. The first residual of a new tree is its first noisy leaf, with
nothing subtracted (``TreeResidualSumQuery.reset_state`` zeroes the previous
noise), so the last prefix noise of every finished tree stays in the model for
good: ``theta = theta_0 + eta / m * (sum of each finished tree's final s + the
current tree's s_t)``. Subtracting the old noise instead would publish the old
tree's sum again, covered only by the new tree's noise, which nobody accounted.

Accounting (the paper's Theorem for tree aggregation; dp_accounting's
``SingleEpochTreeAggregationDpEvent``): a leaf lies in at most
``ceil(log2(T + 1))`` used nodes of a T-leaf tree, so one client's value moves
the released nodes by at most ``sqrt(depth) * C``: a Gaussian mechanism of
multiplier ``z / sqrt(depth)`` (also under adaptive inputs, by composition of the
node releases). Trees that together span at most the sampler's epoch hold each
client at most once, so they cost the deepest of them; such groups compose.
dp_accounting only accounts the tree event under ``REPLACE_SPECIAL`` (replace a
client by the zero record) and its list-valued events cannot be cached, so this
rule hands the accountant the equal Gaussian event ``GaussianDpEvent(z /
sqrt(D))``, ``D`` the sum of the groups' depths: the same RDP at every order,
and exact for PLD too. With cohorts fixed in advance and the denominator m
fixed, replacing a client by the zero record *is* removing its contribution,
the add/remove-one relation fedsim states for these samplers. Fixed-size
(replace-one) cohorts are refused: their epoch is one round, so each tree
would be a single un-amplified leaf, strictly worse than DP-FedAvg.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import attrs
import dp_accounting
import numpy as np

from fedsim.aggregators.base import AggregationOutput, AggregatorState, ClientIds, ClientValue, check_client_values
from fedsim.aggregators.clipping import clipped_sum
from fedsim.aggregators.validation import in_interval, int_at_least, non_negative, one_of, positive
from fedsim.aggregators.vectors import participating, unflatten
from fedsim.privacy import mechanism, tree_aggregation
from fedsim.privacy.accounting import ACCOUNTANTS, check_accountant
from fedsim.privacy.participation import Participation, ParticipationError


@attrs.frozen
class DPFTRL:
    """DP-FTRL's private residuals of tree-aggregated prefix sums of clipped client values (user-level DP).

    ``participation`` is the run's (``sampler.participation(population_size)``),
    bound by a config run; use ``sampler = {name = "round_robin", cohort_size = m}``.
    """

    clip_norm: float = attrs.field(validator=positive)
    noise_multiplier: float = attrs.field(validator=non_negative)
    restart_every: Optional[int] = attrs.field(default=None, validator=attrs.validators.optional(int_at_least(1)))
    target_delta: float = attrs.field(default=1e-5, validator=in_interval(0.0, 1.0, closed_low=False))
    accountant: str = attrs.field(default="rdp", validator=one_of(*ACCOUNTANTS))
    seed: int = attrs.field(default=0, validator=int_at_least(0))
    participation: Optional[Participation] = None

    def __attrs_post_init__(self) -> None:
        if self.participation is None:
            return
        participation = self.participation
        if participation.sampling == "fixed_size":
            raise ParticipationError(
                f"DPFTRL: fixed-size cohorts ({participation.describe()}) may hold a client in consecutive rounds, "
                "so every tree would be one un-amplified round; use sampler = {name = \"round_robin\", "
                f"cohort_size = {participation.cohort_size}}}, or DPFedAvg to keep the uniform sampler"
            )
        check_accountant(self.accountant, participation.sampling)
        if self.restart_every is not None and self.restart_every > participation.epoch_rounds:
            raise ParticipationError(
                f"DPFTRL: restart_every={self.restart_every} is longer than the run's epoch of "
                f"{participation.epoch_rounds} round(s) ({participation.describe()}): a client could take part twice "
                "in one tree and the accounting would be wrong; use sampler = {name = \"round_robin\", cohort_size = m} "
                "with restart_every <= N // m, or leave restart_every unset (one tree per epoch)"
            )

    # What the accountant and the report read ------------------------------------
    @property
    def tree_rounds(self) -> int:
        """Rounds per tree: ``restart_every``, by default the sampler's epoch."""
        return self.restart_every or self._participation().epoch_rounds

    def nodes_charged(self, rounds: int) -> int:
        """D: how many noisy nodes one client's values can reach in ``rounds`` rounds.

        Trees are grouped ``epoch_rounds // tree_rounds`` at a time (at most one
        epoch of consecutive rounds, so each client at most once per group); a
        group costs its deepest tree, whose first tree is the fullest.
        """
        per_tree = self.tree_rounds
        group = self._participation().epoch_rounds // per_tree * per_tree
        full, rest = divmod(rounds, group)
        return full * tree_aggregation.depth(per_tree) + tree_aggregation.depth(min(rest, per_tree))

    def dp_event(self, rounds: int) -> dp_accounting.DpEvent:
        """The first ``rounds`` rounds, as the Gaussian event with the tree events' RDP (see module doc)."""
        if rounds == 0:
            return dp_accounting.NoOpDpEvent()
        if self.noise_multiplier == 0:
            return dp_accounting.NonPrivateDpEvent()
        return dp_accounting.GaussianDpEvent(self.noise_multiplier / math.sqrt(self.nodes_charged(rounds)))

    def epsilon(self, rounds: int) -> float:
        """Epsilon at ``target_delta`` after ``rounds`` rounds."""
        return mechanism.epsilon(self, rounds)

    def rounds(self, state: AggregatorState) -> int:
        return int(state["round"])

    def describe(self) -> dict[str, Any]:
        per_tree = self.tree_rounds
        return {"noise_multiplier": self.noise_multiplier, "clip_norm": self.clip_norm,
                "restart_every": per_tree, "tree": "plain binary tree (not Honaker's efficient variant)",
                "sensitivity": f"sqrt({tree_aggregation.depth(per_tree)}) * clip_norm per epoch of trees"}

    def _participation(self) -> Participation:
        return mechanism.participation_of(self)

    # The aggregator ---------------------------------------------------------------
    def initialize(self) -> AggregatorState:
        return {"seed": self.seed, "round": 0}

    def next(
        self,
        state: AggregatorState,
        client_values: Sequence[ClientValue],
        update_weights: np.ndarray,
        *,
        client_ids: ClientIds = None,
    ) -> AggregationOutput:
        denominator = self._participation().expected_cohort_size
        weights = check_client_values(client_values, update_weights)
        values, _ = participating(client_values, weights)
        total, num_clipped = clipped_sum(values, self.clip_norm, sum(np.size(a) for a in client_values[0]))
        seed, round_num = state["seed"], int(state["round"])
        # Every call is one leaf, empty rounds included, so trees stay aligned with the sampler's epochs.
        tree, leaf = divmod(round_num, self.tree_rounds)
        leaf += 1
        node_std = self.noise_multiplier * self.clip_norm
        if node_std > 0:
            total += tree_aggregation.residual_noise(seed, tree, leaf, node_std, total.size)
        nodes = tree_aggregation.prefix_nodes(leaf)
        residual_nodes = len(set(nodes) ^ set(tree_aggregation.prefix_nodes(leaf - 1)))
        finished = tree * len(tree_aggregation.prefix_nodes(self.tree_rounds))
        measurements = {
            "dp/clip_norm": float(self.clip_norm),
            "dp/num_clipped": float(num_clipped),
            "dp/num_clients": float(len(values)),
            "dp/noise_std": node_std / denominator,  # one tree node's noise, in units of the result
            "dp/residual_noise_std": node_std * math.sqrt(residual_nodes) / denominator,
            # The noise in the sum of all results so far (eta times it is the model's).
            "dp/model_noise_std": node_std * math.sqrt(finished + len(nodes)) / denominator,
            "dp/tree": float(tree),
            "dp/tree_leaf": float(leaf),
            "dp/epsilon": self.epsilon(round_num + 1),
            "dp/delta": self.target_delta,
        }
        new_state = {"seed": seed, "round": round_num + 1}
        return AggregationOutput(unflatten(total / denominator, client_values[0]), new_state, measurements)
