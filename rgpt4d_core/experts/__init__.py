"""Frozen 4D experts (teachers): the contract in ``base``, their config in ``config``, construction by name in
``registry``."""
