"""What an account keeps beside its generations: prompt templates, entity links and the
approval of images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pixelgate.core.ids import new_id
from pixelgate.core.models import ImageView
from pixelgate.db.reads import ReadStore
from pixelgate.db.records import IMG, LINKS, TEMPLATES, LinkView, TemplateView, template_view
from pixelgate.errors import Conflict, NotFound

__all__ = ["CatalogStore"]


class CatalogStore(ReadStore):
    """Templates, links and approvals, each scoped to an account."""

    async def create_template(
        self,
        account_id: str,
        *,
        name: str,
        text: str,
        placeholders: list[str],
        description: str | None,
    ) -> TemplateView:
        """Store a prompt template; ``Conflict`` when the account has one of that name."""
        values: dict[str, Any] = {
            "id": new_id("tpl"),
            "account_id": account_id,
            "name": name,
            "text": text,
            "placeholders": placeholders,
            "description": description,
            "created_at": self.clock(),
        }

        def create(c: Connection) -> None:
            c.execute(insert(TEMPLATES), values)

        try:
            await self.write(create)
        except IntegrityError:
            raise Conflict(
                f"a template named {name!r} already exists", code="template_exists"
            ) from None
        return TemplateView(**values)

    async def find_template(self, account_id: str, ref: str) -> TemplateView | None:
        """The account's template by id or name."""
        column = TEMPLATES.c.id if ref.startswith("tpl_") else TEMPLATES.c.name
        query = select(TEMPLATES).where(TEMPLATES.c.account_id == account_id, column == ref)
        row = await self.read(lambda c: c.execute(query).first())
        return template_view(row) if row is not None else None

    async def list_templates(self, account_id: str) -> list[TemplateView]:
        query = (
            select(TEMPLATES).where(TEMPLATES.c.account_id == account_id).order_by(TEMPLATES.c.name)
        )
        return [template_view(r) for r in await self.read(lambda c: c.execute(query).all())]

    async def delete_template(self, account_id: str, ref: str) -> TemplateView:
        found = await self.find_template(account_id, ref)
        if found is None:
            raise NotFound(f"template {ref!r} not found")

        def remove(c: Connection) -> None:
            c.execute(delete(TEMPLATES).where(TEMPLATES.c.id == found.id))

        await self.write(remove)
        return found

    async def add_links(
        self, gen_id: str, entities: Sequence[tuple[str, str]], *, account_id: str | None
    ) -> list[LinkView]:
        """Link a generation to entities (existing links are kept once); its links after."""
        view = await self.get_generation(gen_id, account_id=account_id)  # → NotFound
        now = self.clock()

        def add(c: Connection) -> None:
            existing = set(
                c.execute(
                    select(LINKS.c.entity_type, LINKS.c.entity_id).where(
                        LINKS.c.generation_id == gen_id
                    )
                ).all()
            )
            rows = [
                {
                    "generation_id": gen_id,
                    "account_id": view.account_id,
                    "entity_type": entity_type,
                    "entity_id": entity_id,
                    "created_at": now,
                }
                for entity_type, entity_id in dict.fromkeys(entities)
                if (entity_type, entity_id) not in existing
            ]
            if rows:
                c.execute(insert(LINKS), rows)

        await self.write(add)
        return await self.list_links(gen_id, account_id=account_id)

    async def list_links(self, gen_id: str, *, account_id: str | None) -> list[LinkView]:
        await self.get_generation(gen_id, account_id=account_id)  # → NotFound
        query = select(LINKS).where(LINKS.c.generation_id == gen_id).order_by(LINKS.c.id)
        return [
            LinkView(
                generation_id=r.generation_id,
                type=r.entity_type,
                id=r.entity_id,
                created_at=r.created_at,
            )
            for r in await self.read(lambda c: c.execute(query).all())
        ]

    async def set_approval(
        self, image_id: str, approval: str, *, account_id: str | None
    ) -> tuple[ImageView, str]:
        """Set an image's approval status (``pending``, ``approved``, ``rejected``)."""
        await self.get_image(image_id, account_id=account_id)  # ownership → NotFound
        now = self.clock()

        def approve(c: Connection) -> None:
            c.execute(
                update(IMG)
                .where(IMG.c.id == image_id)
                .values(approval=approval, approval_updated_at=now)
            )

        await self.write(approve)
        return await self.get_image(image_id, account_id=account_id)
