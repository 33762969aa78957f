from datetime import datetime
from enum import StrEnum
from typing import Annotated

from beanie import Document, Indexed, PydanticObjectId
from pydantic import Field
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.kit.clock import utcnow
from shop.kit.errors import Conflict, NotAuthenticated, ShopError


class Role(StrEnum):
    customer = "customer"
    admin = "admin"


class EmailTaken(Conflict):
    code, title = "email_taken", "Email already registered"


class InvalidRefreshToken(NotAuthenticated):
    code, title = "invalid_refresh_token", "Refresh token unknown, expired or revoked"


class RefreshTokenReused(NotAuthenticated):
    code, title = "refresh_token_reused", "Refresh token already used; log in again"


class AccountNotFound(NotAuthenticated):
    code, title = "account_not_found", "The account no longer exists"


class FormExpected(ShopError):
    status, code, title = 415, "form_expected", "Send the credentials as form fields"


def normalize_email(email: str) -> str:
    """Accounts are found by email without regard to case or surrounding blanks."""
    return email.strip().lower()


class User(Document):
    email: Annotated[str, Indexed(unique=True)]
    password_hash: str
    role: Role = Role.customer
    created_at: datetime = Field(default_factory=utcnow)
    # Bumped when the password or role changes: refresh tokens of earlier logins stop working.
    credentials_version: int = 0

    class Settings:
        name = "users"

    @classmethod
    async def must_exist(
        cls, user_id: PydanticObjectId, session: AsyncClientSession | None = None
    ) -> None:
        """Refuse (401) for an account deleted since its access token was issued: it moves
        no money. One read by ``_id``."""
        found = await cls.get_pymongo_collection().find_one(
            {"_id": user_id}, {"_id": 1}, session=session
        )
        if found is None:
            raise AccountNotFound("The account was deleted; its tokens no longer move money")
