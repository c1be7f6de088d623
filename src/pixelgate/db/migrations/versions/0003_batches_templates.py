"""batches, prompt templates, dedup cache, entity links, image approval

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pixelgate.db.tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", pixelgate.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("canceled_at", pixelgate.db.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_batches_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.UniqueConstraint("account_id", "idempotency_key", name=op.f("uq_batches_account_id")),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_batches_account_created", ["account_id", "created_at"], unique=False
        )

    op.create_table(
        "prompt_templates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("placeholders", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", pixelgate.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_prompt_templates_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_templates")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_prompt_templates_account_id")),
    )

    op.create_table(
        "entity_links",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("generation_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", pixelgate.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_entity_links_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["generations.id"],
            name=op.f("fk_entity_links_generation_id_generations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entity_links")),
        sa.UniqueConstraint(
            "generation_id",
            "entity_type",
            "entity_id",
            name=op.f("uq_entity_links_generation_id"),
        ),
    )
    with op.batch_alter_table("entity_links", schema=None) as batch_op:
        batch_op.create_index(
            "ix_entity_links_entity", ["account_id", "entity_type", "entity_id"], unique=False
        )

    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("cache_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("cached_from", sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_generations_batch_id_batches"), "batches", ["batch_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_generations_cached_from_generations"),
            "generations",
            ["cached_from"],
            ["id"],
        )
        batch_op.create_index("ix_generations_batch", ["batch_id", "status"], unique=False)
        batch_op.create_index("ix_generations_cache", ["account_id", "cache_key"], unique=False)
        batch_op.create_index("ix_generations_cached_from", ["cached_from"], unique=False)

    # cache hits share their source's storage objects: a key is no longer unique
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_constraint("uq_images_key", type_="unique")
        batch_op.create_index("ix_images_key", ["key"], unique=False)
        batch_op.add_column(
            sa.Column("approval", sa.String(length=16), server_default="pending", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "approval_updated_at",
                pixelgate.db.tables.UTCDateTime(timezone=True),
                nullable=True,
            )
        )


def downgrade() -> None:
    # the images of cache hits repeat their source's keys; the unique key needs them gone
    op.execute(
        "DELETE FROM images WHERE generation_id IN "
        "(SELECT id FROM generations WHERE cached_from IS NOT NULL)"
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("approval_updated_at")
        batch_op.drop_column("approval")
        batch_op.drop_index("ix_images_key")
        batch_op.create_unique_constraint(batch_op.f("uq_images_key"), ["key"])

    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_index("ix_generations_cached_from")
        batch_op.drop_index("ix_generations_cache")
        batch_op.drop_index("ix_generations_batch")
        batch_op.drop_constraint(
            batch_op.f("fk_generations_cached_from_generations"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("fk_generations_batch_id_batches"), type_="foreignkey")
        batch_op.drop_column("cached_from")
        batch_op.drop_column("cache_key")
        batch_op.drop_column("batch_id")

    with op.batch_alter_table("entity_links", schema=None) as batch_op:
        batch_op.drop_index("ix_entity_links_entity")
    op.drop_table("entity_links")
    op.drop_table("prompt_templates")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_account_created")
    op.drop_table("batches")
