"""final_status: the status a row takes back once its file is uploaded to object storage.

While a finished file is being uploaded (record.storage = "s3") the row's status is "uploading"; what it
was (complete, interrupted, failed) waits here, so a node restarted mid-upload resumes and restores it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("final_status", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("final_status")
