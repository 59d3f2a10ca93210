"""Initial schema: models, tokens, bases, units, examples, links, users, labels and reviews.

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 01:14:41.201646
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('run_dir', sa.Text(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('user',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('basis',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('hook_name', sa.String(length=200), nullable=False),
    sa.Column('n_units', sa.Integer(), nullable=False),
    sa.Column('d_in', sa.Integer(), nullable=False),
    sa.Column('architecture', sa.String(length=32), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('density_histogram', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=True),
    sa.Column('ingested_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model_id', 'name')
    )
    with op.batch_alter_table('basis', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_basis_model_id'), ['model_id'], unique=False)

    op.create_table('review',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['user.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('token',
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['model.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', 'token_id')
    )
    op.create_table('label',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('basis_id', sa.Integer(), nullable=False),
    sa.Column('unit_index', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['user.id'], ),
    sa.ForeignKeyConstraint(['basis_id'], ['basis.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.create_index('ix_label_unit', ['basis_id', 'unit_index', 'id'], unique=False)

    op.create_table('review_item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('review_id', sa.Integer(), nullable=False),
    sa.Column('basis_id', sa.Integer(), nullable=False),
    sa.Column('unit_index', sa.Integer(), nullable=False),
    sa.Column('rater_id', sa.Integer(), nullable=True),
    sa.Column('score', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['basis_id'], ['basis.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rater_id'], ['user.id'], ),
    sa.ForeignKeyConstraint(['review_id'], ['review.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('review_item', schema=None) as batch_op:
        batch_op.create_index('ix_review_item_review', ['review_id'], unique=False)

    op.create_table('unit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('basis_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('firing_count', sa.BigInteger(), nullable=False),
    sa.Column('density', sa.Float(), nullable=False),
    sa.Column('log10_density', sa.Float(), nullable=True),
    sa.Column('max_activation', sa.Float(), nullable=False),
    sa.Column('mean_activation', sa.Float(), nullable=False),
    sa.Column('top_token_entropy', sa.Float(), nullable=True),
    sa.Column('top_tokens', sa.Text(), nullable=False),
    sa.Column('act_hist', sa.JSON(), nullable=False),
    sa.Column('logit_hist', sa.JSON(), nullable=False),
    sa.Column('top_logits', sa.JSON(), nullable=False),
    sa.Column('bottom_logits', sa.JSON(), nullable=False),
    sa.Column('interval_edges', sa.JSON(), nullable=False),
    sa.Column('interval_counts', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['basis_id'], ['basis.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('basis_id', 'index')
    )
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.create_index('ix_unit_basis_density', ['basis_id', 'density'], unique=False)
        batch_op.create_index('ix_unit_basis_max', ['basis_id', 'max_activation'], unique=False)

    op.create_table('example',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('bucket', sa.Integer(), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('token_ids', sa.LargeBinary(), nullable=False),
    sa.Column('activations', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('example', schema=None) as batch_op:
        batch_op.create_index('ix_example_unit', ['unit_id', 'kind', 'bucket', 'rank'], unique=False)

    op.create_table('unit_link',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('target_basis_id', sa.Integer(), nullable=False),
    sa.Column('target_index', sa.Integer(), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['target_basis_id'], ['basis.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('unit_link', schema=None) as batch_op:
        batch_op.create_index('ix_unit_link_target', ['target_basis_id', 'target_index'], unique=False)
        batch_op.create_index('ix_unit_link_unit', ['unit_id', 'kind', 'rank'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('unit_link', schema=None) as batch_op:
        batch_op.drop_index('ix_unit_link_unit')
        batch_op.drop_index('ix_unit_link_target')

    op.drop_table('unit_link')
    with op.batch_alter_table('example', schema=None) as batch_op:
        batch_op.drop_index('ix_example_unit')

    op.drop_table('example')
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.drop_index('ix_unit_basis_max')
        batch_op.drop_index('ix_unit_basis_density')

    op.drop_table('unit')
    with op.batch_alter_table('review_item', schema=None) as batch_op:
        batch_op.drop_index('ix_review_item_review')

    op.drop_table('review_item')
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.drop_index('ix_label_unit')

    op.drop_table('label')
    op.drop_table('token')
    op.drop_table('review')
    with op.batch_alter_table('basis', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_basis_model_id'))

    op.drop_table('basis')
    op.drop_table('user')
    op.drop_table('model')
