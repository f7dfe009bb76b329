"""Client data: the population abstraction."""
from fedsim.data.client_data import ClientData, ClientDataError

__all__ = ["ClientData", "ClientDataError"]
