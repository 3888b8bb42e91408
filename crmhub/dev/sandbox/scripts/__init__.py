"""Scripts the sandboxes copy next to a system and run with that system's own venv.

They import the system (trytond, proteus, Django and BottleCRM), never crmhub: mypy sees them
with those packages untyped (pyproject's overrides), ruff as any other module.
"""
