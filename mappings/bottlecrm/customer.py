"""BottleCRM account -> canonical Customer. Pure.

The canonical id is the BottleCRM account id. The CRM owns the commercial fields; the ERP's
(credit_hold) are left at their defaults and are not part of the content hash.
"""

from __future__ import annotations

from connectors.bottlecrm.models import Account
from crmhub.errors import MappingError
from mappings.base import content_hash
from schemas.canonical import CURRENCIES, Address, Contact, Customer

#: Fields the CRM does not own (or that change without a change of content).
NOT_OWNED = frozenset({"credit_hold", "updated_at"})


def to_customer(account: Account, default_currency: str) -> Customer:
    currency = account.currency or default_currency
    if currency not in CURRENCIES:
        raise MappingError(f"account {account.id} ({account.name}) has currency {currency!r}, "
                           "not an ISO 4217 code", system="bottlecrm")
    addresses = []
    if account.country:
        addresses.append(Address(kind="billing", street=account.address_line,
                                 city=account.city, postal_code=account.postcode,
                                 region=account.state, country=account.country.upper()))
    contacts = []
    if account.email or account.phone:
        contacts.append(Contact(name=account.name, email=account.email, phone=account.phone,
                                role="account"))
    return Customer(id=account.id, name=account.name, currency=currency, addresses=addresses,
                    contacts=contacts, updated_at=account.updated_at)


def customer_hash(customer: Customer) -> str:
    """What changes when the CRM-owned content changes (never on the hub's own writes)."""
    return content_hash(customer, NOT_OWNED)
