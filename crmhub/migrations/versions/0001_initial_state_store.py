"""initial state store

Revision ID: 0001
Revises:
Create Date: 2026-11-23 01:04:20.166487
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cursor',
    sa.Column('connector', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('stream', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('position', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('connector', 'stream')
    )
    op.create_table('dead_letter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flow', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('group_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('topic', sqlmodel.sql.sqltypes.AutoString(length=249), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.LargeBinary(), nullable=True),
    sa.Column('value', sa.LargeBinary(), nullable=True),
    sa.Column('headers', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('entity_id', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
    sa.Column('error_class', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('error_message', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('first_failure_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_failure_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dead_letter_event_id'), ['event_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dead_letter_flow'), ['flow'], unique=False)
        batch_op.create_index(batch_op.f('ix_dead_letter_status'), ['status'], unique=False)

    op.create_table('ledger',
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('flow', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('entity', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('entity_id', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', 'flow')
    )
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_status'), ['status'], unique=False)

    op.create_table('parked',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flow', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('group_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('entity_id', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('waits_entity', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('waits_id', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('waits_system', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('topic', sqlmodel.sql.sqltypes.AutoString(length=249), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.LargeBinary(), nullable=True),
    sa.Column('value', sa.LargeBinary(), nullable=True),
    sa.Column('headers', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('parked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('replayed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('flow', 'event_id', name='uq_parked_flow_event')
    )
    with op.batch_alter_table('parked', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_parked_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index('ix_parked_flow_entity', ['flow', 'entity_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_parked_state'), ['state'], unique=False)
        batch_op.create_index('ix_parked_waits', ['waits_system', 'waits_entity', 'waits_id'],
                              unique=False)

    op.create_table('target_status',
    sa.Column('system', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('down_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('system')
    )
    op.create_table('xref',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('entity', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('canonical_id', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('system', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_version', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('last_hash', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('system', 'entity', 'canonical_id', name='uq_xref_canonical'),
    sa.UniqueConstraint('system', 'entity', 'external_id', name='uq_xref_external')
    )


def downgrade() -> None:
    op.drop_table('xref')
    op.drop_table('target_status')
    with op.batch_alter_table('parked', schema=None) as batch_op:
        batch_op.drop_index('ix_parked_waits')
        batch_op.drop_index(batch_op.f('ix_parked_state'))
        batch_op.drop_index('ix_parked_flow_entity')
        batch_op.drop_index(batch_op.f('ix_parked_expires_at'))

    op.drop_table('parked')
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_status'))

    op.drop_table('ledger')
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letter_status'))
        batch_op.drop_index(batch_op.f('ix_dead_letter_flow'))
        batch_op.drop_index(batch_op.f('ix_dead_letter_event_id'))

    op.drop_table('dead_letter')
    op.drop_table('cursor')
