from shop.accounts.models import Role, User
from shop.accounts.security import PasswordHashing
from shop.clock import utcnow


async def ensure_admin(email: str, password: str, hashing: PasswordHashing) -> None:
    """The configured admin account exists, with the configured password.

    Unchanged, it is left alone; a new password or role ends the sessions of earlier logins.
    """
    email = email.lower()
    current = await User.find_one(User.email == email)
    if (
        current is not None
        and current.role is Role.admin
        and await hashing.verify(password, current.password_hash)
    ):
        return
    await User.get_pymongo_collection().update_one(
        {"email": email},
        {
            "$set": {"password_hash": await hashing.hash(password), "role": Role.admin.value},
            "$inc": {"credentials_version": 1},
            "$setOnInsert": {"created_at": utcnow()},
        },
        upsert=True,
    )
