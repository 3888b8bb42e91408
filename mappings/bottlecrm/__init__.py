"""BottleCRM <-> canonical: accounts and won deals in; ERP numbers, invoices, payments,
deliveries and approval decisions back onto the deal. Pure."""

SYSTEM = "bottlecrm"
