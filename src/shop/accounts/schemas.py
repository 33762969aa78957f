from typing import Annotated, Literal

from beanie import PydanticObjectId
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from shop.accounts.models import Role

Password = Annotated[str, Field(min_length=8, max_length=128)]


class RegisterRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"email": "ann@example.com", "password": "correct horse battery"}]
        },
    )

    email: Annotated[EmailStr, StringConstraints(max_length=254)]
    password: Password


class LoginForm(BaseModel):
    """The OAuth2 password flow's form: the username is the account's email."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"username": "ann@example.com", "password": "correct horse battery"}]
        }
    )

    username: str = Field(
        max_length=254, description="The account's email address", examples=["ann@example.com"]
    )
    password: str = Field(max_length=128, examples=["correct horse battery"])
    grant_type: str | None = Field(default=None, pattern="^password$")


class UserOut(BaseModel):
    id: PydanticObjectId
    email: str
    role: Role


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid")
    refresh_token: str = Field(
        description="Spend at POST /auth/refresh for a new pair; each is good for one use"
    )
    refresh_expires_in: int = Field(description="Seconds the refresh token is valid")


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[str, Field(min_length=1, max_length=200)]
