"""Browser forms, read one way: `form_fields(Model)` is a route dependency that reads the (urlencoded) form, refuses a
file where text is expected (a 422, not a Python repr stored as text), and validates every field through a pydantic
model, so a bad value is a 422 naming its field, never an `int()` of raw input (a 500 on `²`)."""

from __future__ import annotations

from typing import Annotated, TypeVar, get_origin

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

M = TypeVar("M", bound=BaseModel)


class FormModel(BaseModel):
    """A form's fields; fields it does not name (the CSRF token, ...) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def form_fields(model: type[M]):
    """Return the dependency that parses the request's form into `model` (list fields collect repeated names; any
    other field takes the first value given)."""
    lists = {name for name, field in model.model_fields.items() if get_origin(field.annotation) is list}

    async def parse(request: Request) -> M:
        values: dict[str, str | list[str]] = {}
        for key, value in (await request.form()).multi_items():
            if not isinstance(value, str):
                raise HTTPException(422, f"{key}: a file was sent where text is expected")
            if key in lists:
                values.setdefault(key, []).append(value)
            else:
                values.setdefault(key, value)
        return model.model_validate(values)

    return Depends(parse)


class LoginForm(FormModel):
    token: str = Field("", max_length=1000)
    next: str = Field("/", max_length=2000)


class LogoutForm(FormModel):
    everywhere: bool = False  # "sign out everywhere": every session of the user, not only this browser's


class LabelForm(FormModel):
    """The unit page's label form (the store's `clean_label` words what is wrong, in the panel; the request key
    makes a form sent twice one label)."""

    text: str = Field("", max_length=10_000)
    note: str = Field("", max_length=10_000)
    request_key: str | None = Field(None, max_length=100)


class ScoreForm(FormModel):
    """The review item's form: the hypothesis, each rubric component's radio value (ScoreIn checks them) and
    `interval_0`..`interval_{n-1}`, kept as extra fields."""

    model_config = ConfigDict(extra="allow", frozen=True)
    hypothesis: str = Field("", max_length=10_000)
    n_intervals: int = Field(0, ge=0, le=64)

    def value(self, name: str) -> str | None:
        value = (self.model_extra or {}).get(name)
        return value if isinstance(value, str) else None


LoginFields = Annotated[LoginForm, form_fields(LoginForm)]
LogoutFields = Annotated[LogoutForm, form_fields(LogoutForm)]
LabelFields = Annotated[LabelForm, form_fields(LabelForm)]
ScoreFields = Annotated[ScoreForm, form_fields(ScoreForm)]
