"""feed leases on cursors: one replica polls a stream at a time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cursor', schema=None) as batch_op:
        batch_op.add_column(sa.Column('leased_by', sqlmodel.sql.sqltypes.AutoString(length=128),
                                      nullable=False, server_default=''))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cursor', schema=None) as batch_op:
        batch_op.drop_column('lease_until')
        batch_op.drop_column('leased_by')
