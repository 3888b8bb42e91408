"""Run once into the BottleCRM snapshot after migrate: the admin user, the org, a personal
access token and the products, through BottleCRM's own API views (Django's test client: no
server needed). argv: EMAIL ORG_NAME RESULT_JSON PRODUCTS_JSON."""
import io
import json
import sys
from typing import Any

import django

django.setup()
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

email, org_name, result_path = sys.argv[1:4]
out = io.StringIO()
call_command("devlogin", email, "--create", stdout=out)
access = [line.split()[-1] for line in out.getvalue().splitlines()
          if line.startswith("access_token:")][0]
client = Client()


def call(method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
    response = getattr(client, method)(path, data=json.dumps(body or {}),
                                       content_type="application/json",
                                       HTTP_AUTHORIZATION=f"Bearer {token}")
    if response.status_code >= 300:
        raise SystemExit(f"{method.upper()} {path}: {response.status_code} "
                         f"{response.content[:500]!r}")
    return response.json()


org = call("post", "/api/org/", access, {"name": org_name})
org_id = org.get("org", {}).get("id") or org.get("id")
switched = call("post", "/api/auth/switch-org/", access, {"org_id": org_id})
org_access = switched.get("access_token") or switched.get("access")
minted = call("post", "/api/profile/tokens/", org_access, {"name": "crmhub"})
products = {}
for sku, name, price in json.loads(sys.argv[4]):
    made = call("post", "/api/invoices/products/", org_access,
                {"name": name, "sku": sku, "price": price, "currency": "EUR"})
    products[sku] = made["product"]["id"]
with open(result_path, "w") as handle:
    json.dump({"org": org, "switched": switched, "token": minted, "products": products}, handle)
