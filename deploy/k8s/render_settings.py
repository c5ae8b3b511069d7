"""Render the settings ConfigMap's env files from settings YAML, checked by shopstream's own
Settings model.

Each ``settings.yaml`` (``base/`` and every ``overlays/<env>/``) holds shopstream settings in
the YAML shape of ``shopstream.yaml``; this writes the ``settings.env`` beside it
(``SHOPSTREAM_COLLECTOR__PORT=8080`` lines), which kustomize's configMapGenerator turns into
the ConfigMap ``shopstream-settings`` (an overlay's merges into the base's). Before writing,
the base merged with each overlay must be valid ``Settings``:

- an unknown key fails, naming it (Settings itself ignores unknown keys: a typo would be
  silently dropped);
- a bad value fails with the model's own message;
- a secret fails: secrets come from the Secret ``shopstream-secrets`` (secretKeyRef), never
  a ConfigMap;
- the rendered variables, read back by pydantic-settings as a pod reads them, must give the
  same settings as the YAML.

    .venv/bin/python deploy/k8s/render_settings.py          # write every settings.env
    .venv/bin/python deploy/k8s/render_settings.py --check  # exit 1 if one is out of date
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from shopstream.config import Settings

HERE = Path(__file__).resolve().parent
BASE = HERE / "base"
OVERLAYS = HERE / "overlays"
SETTINGS_FILE = "settings.yaml"
ENV_FILE = "settings.env"
PREFIX = "SHOPSTREAM_"

#: Settings that hold secrets, and the key of shopstream-secrets each comes from. Any other
#: SecretStr field is refused too (found from the model).
SECRETS = {
    "write_keys": "write-keys",
    "postgres_dsn": "postgres-dsn",
    "transform.email_salt": "email-salt",
    "genai.api_key": "genai-api-key",
    # librdkafka properties may carry SASL passwords (config.py: "never in a file").
    "kafka.client_config": None,
}


class SettingsError(ValueError):
    """A settings file shopstream would not run with; the message says which key and why."""


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The settings section a field's annotation is (``CollectorSettings``), if it is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _holds_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        return any(_holds_secret(arg) for arg in typing.get_args(annotation))
    return False


def check_keys(data: Mapping[str, Any], model: type[BaseModel], where: str, path: str = "") -> None:
    """Refuse keys the model does not have and secrets, naming the key and the file."""
    for key, value in data.items():
        dotted = f"{path}{key}"
        field = model.model_fields.get(key)
        if field is None:
            known = ", ".join(sorted(model.model_fields))
            raise SettingsError(f"{where}: unknown setting {dotted!r} (known here: {known})")
        if dotted in SECRETS or _holds_secret(field.annotation):
            source = SECRETS.get(dotted)
            hint = f" (key {source!r})" if source else ""
            raise SettingsError(
                f"{where}: {dotted!r} is a secret: it comes from the Secret shopstream-secrets"
                f"{hint} through secretKeyRef, never from the settings ConfigMap"
            )
        if value is None:
            raise SettingsError(f"{where}: {dotted!r} is null: leave it out to keep the default")
        section = _submodel(field.annotation)
        if section is not None:
            if not isinstance(value, Mapping):
                raise SettingsError(f"{where}: {dotted!r} is a section: give it a mapping")
            check_keys(value, section, where, f"{dotted}.")


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """The overlay's settings over the base's, section by section."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        # pydantic-settings decodes complex fields from JSON.
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def env_lines(data: Mapping[str, Any], path: str = PREFIX) -> Iterator[tuple[str, str]]:
    """``(SHOPSTREAM_COLLECTOR__PORT, "8080")`` for every leaf, nested with ``__``."""
    for key, value in data.items():
        name = f"{path}{key.upper()}"
        if isinstance(value, Mapping) and _submodel_at(name) is not None:
            yield from env_lines(value, f"{name}__")
        else:
            yield name, _env_value(value)


def _submodel_at(name: str) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Settings
    for part in name.removeprefix(PREFIX).lower().split("__"):
        field = model.model_fields.get(part) if model else None
        model = _submodel(field.annotation) if field else None
    return model


class _FromEnvironmentOnly(Settings):
    """Settings as a pod reads them: from SHOPSTREAM_* variables alone (no YAML file)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings,)


def validate(data: Mapping[str, Any], where: str) -> Settings:
    """The settings ``data`` gives, or a SettingsError naming the keys that are wrong."""
    check_keys(data, Settings, where)
    try:
        settings = Settings.model_validate(dict(data))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise SettingsError(f"{where}: {problems}") from None
    # Read back as a pod does: the rendered variables must give the same settings.
    rendered = dict(env_lines(data))
    with mock.patch.dict(os.environ, rendered, clear=True):
        from_env = _FromEnvironmentOnly()
    if from_env.model_dump() != settings.model_dump():
        raise SettingsError(f"{where}: the rendered variables do not read back as the YAML")
    return settings


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings")
    return data


def render(data: Mapping[str, Any], source: str) -> str:
    """The env file's text for ``data`` (read from ``source``, relative to deploy/k8s)."""
    lines = [
        f"# Generated by deploy/k8s/render_settings.py from deploy/k8s/{source}: edit that, "
        "then run it.",
        *(f"{name}={value}" for name, value in env_lines(data)),
    ]
    return "\n".join(lines) + "\n"


def rendered_files(base_dir: Path = BASE, overlays_dir: Path = OVERLAYS) -> dict[Path, str]:
    """Every settings.env and its text, after validating the base merged with each overlay."""
    base_file = base_dir / SETTINGS_FILE
    base = load_yaml(base_file)
    validate(base, str(base_file))
    files = {base_dir / ENV_FILE: render(base, f"{base_dir.name}/{SETTINGS_FILE}")}
    for overlay_file in sorted(overlays_dir.glob(f"*/{SETTINGS_FILE}")):
        overlay = load_yaml(overlay_file)
        check_keys(overlay, Settings, str(overlay_file))
        validate(merge(base, overlay), f"{overlay_file} (over {base_file.name})")
        where = overlay_file.relative_to(overlays_dir.parent)
        files[overlay_file.parent / ENV_FILE] = render(overlay, str(where))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a settings.env is stale")
    args = parser.parse_args(argv)
    try:
        files = rendered_files()
    except (SettingsError, yaml.YAMLError) as error:
        print(f"render_settings: {error}", file=sys.stderr)
        return 2
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(
                f"render_settings: {path} is out of date: run {Path(__file__).name}",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
