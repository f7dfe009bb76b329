"""Errors raised by the client-data package."""


class ClientDataError(ValueError):
    """Raised for a bad client id, a malformed population or a malformed file."""


class DatasetNotFoundError(ClientDataError):
    """A data set file is not in the cache and could not be downloaded."""
