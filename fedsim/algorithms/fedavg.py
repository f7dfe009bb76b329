"""Federated Averaging (McMahan, Moore, Ramage, Hampson, Aguera y Arcas, 2017,
"Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS).

The builder lives with the engine (``fedsim.learning.fedavg``) because every
other algorithm starts from its blocks; this module gives it its place among
the algorithms. ``weighted=False`` averages clients equally.
"""

from fedsim.learning.fedavg import batch_and_repeat, build_fedavg, client_prep

__all__ = ["batch_and_repeat", "build_fedavg", "client_prep"]
