"""ingress signatures: webhook signatures accepted within their tolerance (replays refused)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'ingress_signature',
        sa.Column('system', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('signature', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('system', 'signature'),
    )
    op.create_index('ix_ingress_signature_expires_at', 'ingress_signature', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_ingress_signature_expires_at', table_name='ingress_signature')
    op.drop_table('ingress_signature')
