"""A published privacy figure, reproduced from fedsim's own accounting of the mechanism."""
import numpy as np
import pytest

from fedsim.aggregators import DPFedAvg
from fedsim.privacy import Participation
from fedsim.privacy.accounting import rdp_curve


def test_abadi_et_al_2016_moments_accountant_figure():
    """Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, Section 3.1 (the text beside
    Theorem 1, not a table): "with q = 0.01, sigma = 4, delta = 1e-5, and T = 10000, we have
    epsilon ~ 1.26 using the moments accountant". Their accountant: log moments alpha(lambda) at
    integer lambda <= 32 (alpha(lambda) = lambda * RDP(lambda + 1)), and the tail bound
    epsilon = min_lambda (T alpha(lambda) + log(1/delta)) / lambda."""
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=4.0, participation=Participation.poisson(60_000, 0.01))
    orders, curve = rdp_curve(dp.dp_event(1).event, dp.participation.relation)
    moments = [(a - 1, (a - 1) * rdp) for a, rdp in zip(orders, curve) if float(a).is_integer() and 2 <= a <= 33]
    assert len(moments) == 32
    epsilon = min((10_000 * alpha + np.log(1 / 1e-5)) / lam for lam, alpha in moments)
    assert epsilon == pytest.approx(1.26, abs=0.005)
    # fedsim's report uses the tighter RDP conversion (Canonne, Kamath, Steinke 2020): below the 2016 figure.
    assert dp.epsilon(10_000) < epsilon
