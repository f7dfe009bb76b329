"""Federated Averaging (McMahan, Moore, Ramage, Hampson, Aguera y Arcas, 2017,
"Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS).

The builder lives with the engine (``fedsim.learning.fedavg``) because its
blocks are the round's defaults; this module gives it its place among the
algorithms. ``weighted=False`` averages clients equally.
"""

from fedsim.learning.builder import batch_and_repeat, client_prep
from fedsim.learning.fedavg import build_fedavg, fedavg

__all__ = ["batch_and_repeat", "build_fedavg", "client_prep", "fedavg"]
