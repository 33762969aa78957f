from shop.accounts.models import Role, User
from shop.accounts.security import PasswordHashing
from shop.clock import utcnow


async def ensure_admin(email: str, password: str, hashing: PasswordHashing) -> None:
    """The configured admin account exists, with the configured password."""
    await User.get_pymongo_collection().update_one(
        {"email": email.lower()},
        {
            "$set": {"password_hash": await hashing.hash(password), "role": Role.admin.value},
            "$setOnInsert": {"created_at": utcnow()},
        },
        upsert=True,
    )
