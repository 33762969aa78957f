"""Settings, read from the environment with the prefix ``SHOP_``."""

import contextlib
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The development admin (SHOP_DEV_ADMIN, set by `make run`); never in production.
DEV_ADMIN_EMAIL = "admin@example.com"


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    mongodb_url: str | None = None
    data_dir: Path = Path("var")
    db_name: str = "shop"
    secret_key: SecretStr | None = None
    access_token_minutes: int = Field(default=15, gt=0)
    refresh_token_days: int = Field(default=30, gt=0)
    admin_email: str | None = None
    admin_password: SecretStr | None = None
    demo_data: bool = False
    # Development only (`make run` sets it): an admin account, admin@example.com, with a
    # password made once and kept in the data directory, printed at start-up.
    dev_admin: bool = False
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    payment_timeout_seconds: float = Field(default=1800, gt=0)
    # How long a payment attempt holds its order. An attempt whose process died is settled
    # with the provider after this, by whoever next reads the order or by the sweeper.
    payment_hold_seconds: float = Field(default=30, gt=0)
    sweep_interval_seconds: float = Field(default=30, gt=0)
    # The simulated provider, as `provider: "mock"`: unset, it is offered in development
    # without a Stripe key, and never in production, where an order it "paid" would be an
    # order given away (a service that takes real payments offers it only when asked to).
    simulated_payments: bool | None = None
    # Stripe, as `provider: "stripe"`, when its secret key is set (sk_test_... for test
    # mode). Webhooks are checked with the endpoint's signing secret (whsec_...). The API
    # base is Stripe's unless pointed elsewhere (the tests' localstripe).
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    # The API at stripe_api_base is localstripe, which knows older spellings of some
    # parameters (see the README's localstripe notes).
    stripe_localstripe: bool = False
    idempotency_key_hours: int = Field(default=24, ge=24)
    return_window_days: int = Field(default=14, ge=0)
    returns_auto_approve: bool = True
    # At most this many password hashes (argon2: ~64 MiB and a core each) run at once.
    password_hash_concurrency: int = Field(default=os.cpu_count() or 2, ge=1)
    # After this many failed logins for one account from one client address within
    # login_window_seconds, that account is refused (429) from that address only, for
    # login_block_seconds, doubling with each further failure up to login_block_max_seconds.
    # A success resets the pair. The same account from elsewhere is never refused for it.
    login_failures_limit: int = Field(default=10, ge=1)
    login_block_seconds: float = Field(default=1.0, gt=0)
    login_block_max_seconds: float = Field(default=900.0, gt=0)
    login_window_seconds: float = Field(default=900.0, gt=0)
    # Failed logins one client address may make across all accounts within
    # login_address_window_seconds (an office or a carrier puts many customers behind one
    # address; one password sprayed over many accounts is stopped here). Past it, every
    # login from that address is refused for a block that doubles up to the window.
    login_address_failures_limit: int = Field(default=100, ge=1)
    login_address_window_seconds: float = Field(default=3600.0, gt=0)
    # A cart holds at most this many different products, and this many units of each.
    cart_max_lines: int = Field(default=100, ge=1)
    cart_max_line_quantity: int = Field(default=1000, ge=1)
    # Refused promo codes one customer may try before codes are refused for a while (429).
    promo_code_failures_limit: int = Field(default=10, ge=1)
    # Registrations one client address may make per hour: enough for a shared address,
    # not for a bot.
    registrations_per_address: int = Field(default=100, ge=1)
    # A guest's cart (no account yet) lives this many days after its last change; one
    # client address may start this many guest carts per hour.
    guest_cart_days: float = Field(default=7, gt=0)
    guest_carts_per_address: int = Field(default=100, ge=1)
    # Proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed:
    # for a request from one of them, the client is the right-most address in that header
    # that is not one of them. From anyone else the header is ignored.
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)
    # How long a request waits for a reachable database, and the most one database operation
    # (retries included) may take; past either it answers 503 database_unavailable.
    db_selection_timeout_seconds: float = Field(default=2.0, gt=0)
    db_timeout_seconds: float = Field(default=10.0, gt=0)
    # A client must send each request whole within this many seconds, or is disconnected.
    request_read_timeout_seconds: float = Field(default=10.0, gt=0)
    # Requests with a larger body are refused (413) before it is read past the limit.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Origins allowed to call the API from a browser; none (CORS off) unless listed.
    cors_origins: list[str] = Field(default_factory=list)
    # How old the cart's view of products and discounts may be; 0 reads them every time.
    catalog_cache_seconds: float = Field(default=2.0, ge=0)
    # Where `shop serve` listens, and with how many processes (its options win).
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    # One JSON object per line (for log collectors), or plain text; by default text in
    # development and JSON in production.
    log_format: Literal["json", "text"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def effective_log_format(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.environment == "production" else "text"

    @property
    def offers_simulated_payments(self) -> bool:
        if self.simulated_payments is not None:
            return self.simulated_payments
        return self.environment != "production" and self.stripe_secret_key is None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _production_needs_a_secret(self) -> "AppSettings":
        if self.environment == "production" and self.secret_key is None:
            raise ValueError("SHOP_SECRET_KEY must be set when SHOP_ENVIRONMENT=production")
        if self.environment == "production" and self.dev_admin:
            raise ValueError("SHOP_DEV_ADMIN is for development; set SHOP_ADMIN_* instead")
        if self.environment == "production" and self.simulated_payments:
            raise ValueError("SHOP_SIMULATED_PAYMENTS is for development: it pays for nothing")
        return self

    def dev_admin_password(self) -> str:
        """The development admin's password, made once and kept in the data directory."""
        return _kept_secret(self.data_dir, "dev_admin_password", length=12)

    def signing_key(self) -> str:
        """The JWT signing key: the configured one, or a development key kept in the data dir."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return _kept_secret(self.data_dir, "secret_key", length=48)


def _kept_secret(data_dir: Path, name: str, length: int) -> str:
    path = data_dir / name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        draft = data_dir / f".{name}.{secrets.token_hex(8)}"
        draft.write_text(secrets.token_urlsafe(length))
        draft.chmod(0o600)
        # link() never replaces: when several workers start at once, the first key wins.
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    return path.read_text().strip()


@lru_cache
def get_settings() -> AppSettings:
    return AppSettings()
