"""Seed the Tryton sandbox's template: company, chart, fiscal years, taxes, currencies, the
payment method, products in stock. Run once per template by the sandbox venv's python with
proteus in-process (set_trytond: no server); argv = CONF DATABASE RESULT_JSON; writes the ids
it created to RESULT_JSON and prints nothing on success."""
import datetime as dt
import json
import sys
from decimal import Decimal
from typing import Any

from proteus import Model
from proteus import config as pconfig

conf, database, result_path = sys.argv[1:4]
config = pconfig.set_trytond(database=database, config_file=conf)

from trytond.modules.account.tests.tools import (  # noqa: E402
    create_chart,
    create_fiscalyear,
    create_tax,
    get_accounts,
)
from trytond.modules.account_invoice.tests.tools import (  # noqa: E402
    create_payment_term,
    set_fiscalyear_invoice_sequences,
)
from trytond.modules.company.tests.tools import create_company, get_company  # noqa: E402

Currency = Model.get('currency.currency')
# Rates are per unit of the company currency (EUR 1): 1 EUR = 1.08 USD. Dated 0001-01-01
# so that sales and invoices of any date convert.
currencies = {}
for code, name, symbol, rate in (('EUR', 'Euro', '€', '1'),
                                 ('USD', 'US Dollar', '$', '1.08')):
    currency = Currency(name=name, code=code, symbol=symbol, rounding=Decimal('0.01'))
    currency.rates.new(date=dt.date.min, rate=Decimal(rate))
    currency.save()
    currencies[code] = currency
eur = currencies['EUR']

# All ISO 3166-1 countries in one create (addresses need them); no subdivisions.
import pycountry  # noqa: E402

Country = Model.get('country.country')
Country.save([Country(name=c.name, code=c.alpha_2, code3=c.alpha_3, code_numeric=c.numeric)
    for c in pycountry.countries])

Party = Model.get('party.party')
company_party = Party(name='crmhub Sandbox GmbH')
company_party.save()
create_company(party=company_party, currency=eur)
company = get_company()
create_chart(company)
accounts = get_accounts(company)

year = dt.date.today().year
fiscalyears = []
for y in (year, year + 1):
    fiscalyear = set_fiscalyear_invoice_sequences(
        create_fiscalyear(company, today=(dt.date(y, 1, 1), dt.date(y, 12, 31))))
    fiscalyear.save()
    fiscalyear.click('create_period')
    fiscalyears.append(fiscalyear.id)

taxes = {}
for tax_rate, name in ((Decimal('0.19'), 'VAT 19%'), (Decimal('0.07'), 'VAT 7%')):
    tax = create_tax(tax_rate, company)
    tax.name = tax.description = name
    tax.save()
    taxes[name] = tax

payment_term = create_payment_term()
payment_term.save()

# Parties created over raw RPC have no accounts or payment term of their own: invoices use
# the company defaults. create_chart set the receivable/payable ones; add the payment term.
AccountConfiguration = Model.get('account.configuration')
account_configuration = AccountConfiguration(1)
account_configuration.default_customer_payment_term = payment_term
account_configuration.save()
assert account_configuration.default_account_receivable == accounts['receivable']
assert account_configuration.default_account_payable == accounts['payable']

# A company that invoices in a foreign currency books the rounding of each converted line
# (and later exchange gains and losses) to exchange accounts: without them Tryton refuses to
# post a USD invoice whose lines do not convert to a balanced EUR move.
Account = Model.get('account.account')
exchange = {}
for key, name, kind in (('gain', 'Currency exchange gains', 'revenue'),
                        ('loss', 'Currency exchange losses', 'expense')):
    account = Account(parent=accounts[kind].parent, name=name, type=accounts[kind].type)
    account.save()
    exchange[key] = account
account_configuration.currency_exchange_credit_account = exchange['gain']
account_configuration.currency_exchange_debit_account = exchange['loss']
account_configuration.save()

Journal = Model.get('account.journal')
cash_journal, = Journal.find([('type', '=', 'cash')], limit=1)
result: dict[str, Any] = {'payment_method': None, 'payment_journal': None}
PaymentMethod = Model.get('account.invoice.payment.method')
method = PaymentMethod(name='Bank transfer', journal=cash_journal,
    credit_account=accounts['cash'], debit_account=accounts['cash'])
method.save()
result['payment_method'] = method.id

Module = Model.get('ir.module')
if Module.find([('name', '=', 'account_payment'), ('state', '=', 'activated')]):
    clearing = Account(parent=accounts['receivable'].parent, name='Bank Clearing',
        type=accounts['payable'].type, reconcile=True, deferral=True)
    clearing.save()
    revenue_journal, = Journal.find([('code', '=', 'REV')], limit=1)
    PaymentJournal = Model.get('account.payment.journal')
    journal = PaymentJournal(name='Manual', process_method='manual', currency=eur,
        company=company)
    if hasattr(journal, 'clearing_account'):
        journal.clearing_account = clearing
        journal.clearing_journal = revenue_journal
    journal.save()
    result['payment_journal'] = journal.id
    result['clearing_account'] = clearing.id

Category = Model.get('product.category')
categories = {}
for name in ('VAT 19%', 'VAT 7%'):
    category = Category(name='Goods ' + name, accounting=True)
    category.account_revenue = accounts['revenue']
    category.account_expense = accounts['expense']
    category.customer_taxes.append(Model.get('account.tax')(taxes[name].id))
    category.supplier_taxes.append(Model.get('account.tax')(taxes[name].id))
    category.save()
    categories[name] = category

Uom = Model.get('product.uom')
unit, = Uom.find([('name', '=', 'Unit')])
Template = Model.get('product.template')
catalogue = [
    ('WIDGET', 'Widget', '12.50', '5.00', 'VAT 19%', 500),
    ('PUMP-200', 'Pump 200', '1450.00', '800.00', 'VAT 19%', 20),
    ('SEAL-KIT', 'Seal kit', '39.90', '12.00', 'VAT 19%', 200),
    ('VALVE-9', 'Valve 9', '89.00', '40.00', 'VAT 19%', 120),
    ('MANUAL', 'Operating manual (print)', '19.00', '4.00', 'VAT 7%', 300),
]
products = {}
quantities = {}
for code, name, price, cost, tax, qty in catalogue:
    template = Template(name=name, code=code, type='goods', default_uom=unit,
        salable=True, list_price=Decimal(price), account_category=categories[tax])
    if hasattr(template, 'sale_uom'):
        template.sale_uom = unit
    template.save()
    product, = template.products
    # template.cost_price is a read-only Function field: the value lives on the variant
    product.cost_price = Decimal(cost)
    product.save()
    products[code] = product
    quantities[code] = qty

Location = Model.get('stock.location')
storage, = Location.find([('code', '=', 'STO')])
Inventory = Model.get('stock.inventory')
inventory = Inventory(location=storage)
for code, product in products.items():
    line = inventory.lines.new(product=product)
    line.quantity = float(quantities[code])
    line.expected_quantity = 0.0
inventory.click('confirm')
assert inventory.state == 'done', inventory.state

result.update({
    'company': company.id,
    'company_party': company_party.id,
    'currency': eur.id,
    'currencies': {code: c.id for code, c in currencies.items()},
    'receivable_account': accounts['receivable'].id,
    'exchange_accounts': {key: a.id for key, a in exchange.items()},
    'payable_account': accounts['payable'].id,
    'fiscalyears': fiscalyears,
    'taxes': {name: tax.id for name, tax in taxes.items()},
    'payment_term': payment_term.id,
    'categories': {name: c.id for name, c in categories.items()},
    'products': {code: p.id for code, p in products.items()},
    'stock': quantities,
    'storage_location': storage.id,
    'inventory': inventory.id,
    'countries': len(Country.find([])),
})
with open(result_path, 'w') as handle:
    json.dump(result, handle)
