"""TensorFlow Federated's data sets on disk: the cache folder and each set's file name.

Read by the loaders and by a config's early checks, which look for the file
before TensorFlow starts (``fedsim.experiment.preflight``), so no TensorFlow here.
"""

DEFAULT_CACHE_DIR = "~/.cache/fedsim/datasets"

CIFAR100 = "cifar100.sqlite.lzma"
EMNIST = "emnist_all.sqlite.lzma"
SHAKESPEARE = "shakespeare.sqlite.lzma"
STACKOVERFLOW = "stackoverflow.sqlite.lzma"
