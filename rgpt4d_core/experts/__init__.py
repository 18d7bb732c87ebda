"""Frozen 4D experts (teachers): the contract in ``base``, construction by name in ``registry``."""
