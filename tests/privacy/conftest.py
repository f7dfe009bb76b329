from tests.experiment.conftest import tiny_config  # noqa: F401 (a fixture)
