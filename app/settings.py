"""The product's settings, read from the environment (prefix MONOSCOPE_) in one place."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from sae.errors import MonoscopeError


class Settings(BaseSettings):
    """Database URL, the address `monoscope serve` binds, and access: `MONOSCOPE_DATABASE_URL` selects PostgreSQL,
    `MONOSCOPE_HOST` / `MONOSCOPE_PORT` are serve's defaults when its flags are not given."""

    model_config = SettingsConfigDict(env_prefix="MONOSCOPE_")

    database_url: str = "sqlite:///monoscope.db"
    host: str = "127.0.0.1"
    port: int = 8000
    # Signs session and CSRF cookies. Unset: generated on first start and kept in the database (table app_secret),
    # so sessions survive restarts and every worker process agrees; never in the repository.
    secret_key: str | None = None
    require_login: bool = False  # true: reading pages and the API needs a signed-in user too, not only writing
    secure_cookies: bool = False  # true behind HTTPS: session and CSRF cookies only travel over HTTPS


def load_settings(**given) -> Settings:
    """Return the settings with each given non-None value (a command-line flag) over the environment's; a bad
    environment value is one line, not a validation traceback."""
    try:
        return Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as e:
        bad = "; ".join(f"MONOSCOPE_{'_'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors())
        raise MonoscopeError(f"bad setting {bad}") from None
