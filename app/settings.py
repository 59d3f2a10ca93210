"""The product's settings, read from the environment (prefix MONOSCOPE_) in one place."""

from __future__ import annotations

import secrets

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Database URL and web-server settings; `MONOSCOPE_DATABASE_URL` selects PostgreSQL."""

    model_config = SettingsConfigDict(env_prefix="MONOSCOPE_")

    database_url: str = "sqlite:///monoscope.db"
    host: str = "127.0.0.1"
    port: int = 8000
    # Signs session cookies (later: labels and reviews). Random per process unless set, so sessions end on restart.
    secret_key: str = Field(default_factory=lambda: secrets.token_hex(32))
