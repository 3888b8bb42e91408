"""Canonical Customer -> Tryton party.party values (addresses, contact mechanisms). Pure.

The party is found again by an identifier (no type) whose code is `crmhub:<customer id>`, so
an upsert never creates a second party. The CRM owns these fields: the ERP copy is rewritten.
Regions are not mapped: Tryton wants a country.subdivision record, which needs its own lookup.
"""

from __future__ import annotations

from connectors.tryton.models import (
    IDENTIFIER_PREFIX,
    AddressValues,
    ContactMechanismValues,
    PartyValues,
)
from schemas.canonical import Address, Customer


def to_party(customer: Customer) -> PartyValues:
    mechanisms: list[ContactMechanismValues] = []
    for contact in customer.contacts:
        for kind, value in (("email", contact.email), ("phone", contact.phone)):
            if value and all((m.type, m.value) != (kind, value) for m in mechanisms):
                mechanisms.append(ContactMechanismValues(type=kind, value=value,
                                                         name=contact.name))
    return PartyValues(identifier=identifier_for(customer.id), name=customer.name,
                       addresses=[address_values(a) for a in customer.addresses],
                       contact_mechanisms=mechanisms)


def address_values(address: Address) -> AddressValues:
    street = "\n".join(line for line in (address.street, address.street2) if line) or None
    return AddressValues(street=street, postal_code=address.postal_code,
                         city=address.city, country_code=address.country,
                         invoice=address.kind == "billing", delivery=address.kind == "shipping")


def identifier_for(customer_id: str) -> str:
    return IDENTIFIER_PREFIX + customer_id


def customer_id_for(party: int, identifier: str | None) -> str:
    """The canonical customer id of a party: the hub's identifier, else one named by the ERP.

    Parties created in the ERP by hand have no hub identifier; their records still flow out,
    under the id `tryton-party-<id>`.
    """
    if identifier and identifier.startswith(IDENTIFIER_PREFIX):
        return identifier[len(IDENTIFIER_PREFIX):]
    return f"tryton-party-{party}"
