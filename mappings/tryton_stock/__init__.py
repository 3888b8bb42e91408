"""Pure mappings from Tryton stock (the supply-chain side) payloads to canonical models."""
