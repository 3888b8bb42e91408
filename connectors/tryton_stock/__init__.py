"""Tryton stock as the supply-chain system (SCM): customer shipments out of the warehouse."""
