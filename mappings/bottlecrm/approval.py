"""Canonical approval decision (the OA system's) -> a note on the deal; a rejection also
closes the deal as lost. Pure."""

from __future__ import annotations

from connectors.bottlecrm.models import DealNote
from crmhub.errors import MappingError
from mappings.base import XrefLookup
from schemas.canonical import Approval

SYSTEM = "bottlecrm"
LOST_STAGE = "CLOSED_LOST"


def decision_note(approval: Approval, xref: XrefLookup) -> DealNote:
    deal = xref.require("order", approval.order_id, SYSTEM)
    if approval.state not in ("approved", "rejected", "expired"):
        raise MappingError(f"approval {approval.id} is {approval.state!r}, not decided",
                           system=SYSTEM)
    by = f" by {approval.approver}" if approval.approver else ""
    why = f": {approval.comment}" if approval.comment else ""
    marker = f"[crmhub:approval {approval.id} {approval.state}]"
    if approval.state == "rejected":
        closed = approval.decided_at.date() if approval.decided_at else None
        return DealNote(deal_id=deal, marker=marker, text=f"Order approval rejected{by}{why}",
                        stage=LOST_STAGE, closed_on=closed)
    return DealNote(deal_id=deal, marker=marker,
                    text=f"Order approval {approval.state}{by}{why}")
