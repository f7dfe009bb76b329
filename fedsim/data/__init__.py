"""Client data: the population abstraction, file readers, partitioners, preprocessing."""

from fedsim.data.client_data import ClientData
from fedsim.data.client_ids import ClientIds, RangeIds
from fedsim.data.errors import ClientDataError, DatasetNotFoundError
from fedsim.data.sql import read_sql_client_data, write_sql_client_data

__all__ = [
    "ClientData",
    "ClientDataError",
    "ClientIds",
    "DatasetNotFoundError",
    "RangeIds",
    "read_sql_client_data",
    "write_sql_client_data",
]
