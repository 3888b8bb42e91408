"""`make demo` on embedded defaults: the same command a new user runs first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


# A first run builds the BottleCRM sandbox (venv + ~2-3 minutes of migrations) if no test
# before this one did.
@pytest.mark.timeout(1200)
def test_demo_once_runs_the_scenario_and_exits_zero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CRMHUB_", "FILEDROP_", "TRYTON_", "BOTTLECRM_", "MATRIX_",
                                "APPROVAL_", "SMTP_", "CALDAV_", "NOTIFY_", "CHATBOTS_"))
           or k == "CRMHUB_SANDBOX_DIR"}  # where the machine keeps its built sandboxes
    crmhub = Path(sys.executable).with_name("crmhub")
    result = subprocess.run([str(crmhub), "demo", "--once"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1100)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "embedded broker" in output and "crmhub ready in" in output
    assert "order O-1001 parked: customer 'C-1' is not yet bound in filedrop" in output
    assert "order O-1001 -> filedrop order/O-1001.json" in output
    assert "duplicates skipped by the ledger: 1" in output
    assert re.search(r"dead letter #\d+: DecodeError: not JSON", output)
    # the ERP half: a confirmed Tryton sale, then invoice, payments and delivery come back
    assert re.search(r"order O-1002 -> Tryton sale \S+ \((confirmed|processing)", output)
    assert "feed -> invoice.posted" in output
    assert "feed -> invoice.payment_state_changed tryton-invoice-1 (partially_paid)" in output
    assert "feed -> invoice.payment_state_changed tryton-invoice-1 (paid)" in output
    assert "feed -> shipment.delivered" in output
    assert "currency CNY is not set up in the ERP" in output  # O-1001 is a CNY order
    assert "every ERP and SCM change arrived once" in output
    # the CRM loop: BottleCRM deal won -> Tryton sale -> number on the deal -> invoice -> paid
    assert re.search(r"-> Tryton sale confirmed, [\d.]+s later", output)
    # the deal is 2983.30 net (40 x 39.90 less 7.5% among its lines); the ERP adds its
    # products' taxes (19% and 7%), and the note on the deal shows the ERP's figures
    assert "= 2983.30 EUR (no tax" in output
    assert re.search(r"-> BottleCRM deal shows the ERP's totals, [\d.]+s later", output)
    assert re.search(r"note on the deal: ERP order \S+ confirmed: total 3543\.29 EUR \(net "
                     r"2983\.30 \+ tax 559\.99\)", output)
    assert re.search(r"-> invoice in BottleCRM, [\d.]+s later", output)
    assert "-> BottleCRM invoice Partially_Paid" in output
    assert re.search(r"-> BottleCRM invoice Paid, [\d.]+s later", output)
    # the second is the payment itself, or the settlement when the "paid" state overtook it
    assert re.search(r"payments in BottleCRM: 1771\.64 \(tryton-payment-\d+\), 1771\.65 "
                     r"\(tryton-(payment-\d+|invoice-\d+:settled)\)", output)
    assert "CRM loop done" in output
    # the OA half: an order above the limit waits for approval in Matrix, a scripted approver
    # answers, and the order then becomes a sale; its owner is mailed
    assert "approval requested in the Matrix room" in output
    assert "awaiting approval ['O-1003']" in output
    assert "@alice:hub.local (scripted approver) replied: APPROVE" in output
    assert re.search(r"order O-1003 approved -> Tryton sale id \d+", output)
    assert "mail to erika.muster@example.com: Order O-1003 is in the ERP as" in output
    assert "scenario succeeded" in output
    dropped = sorted(p.relative_to(tmp_path / "var/demo/filedrop").as_posix()
                     for p in (tmp_path / "var/demo/filedrop").rglob("*.json"))
    scripted = ["customer/C-1.json", "customer/C-2.json", "order/O-1001.json",
                "order/O-1002.json", "order/O-1003.json"]
    # the CRM loop's account and won deal reach the drop folder too (ids are BottleCRM's)
    crm_loop = [p for p in dropped if p not in scripted]
    assert [p for p in dropped if p in scripted] == scripted
    assert sorted(p.split("/")[0] for p in crm_loop) == ["customer", "order"]
