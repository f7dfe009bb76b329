"""Privacy: what a run's sampling proves (``Participation``) and the accounting of its mechanism.

The mechanisms themselves are aggregator rules (``fedsim.aggregators``:
``dp_fedavg``, ``dp_ftrl``, ``distributed_dp``); ``fedsim.privacy.mechanism``
finds the one in a chain and reports its epsilon after every round.
"""

from fedsim.privacy.accounting import AccountingError, find_noise_multiplier
from fedsim.privacy.mechanism import report as privacy_report
from fedsim.privacy.participation import Participation, ParticipationError

__all__ = ["AccountingError", "Participation", "ParticipationError", "find_noise_multiplier", "privacy_report"]
